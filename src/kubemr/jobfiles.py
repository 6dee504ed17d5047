"""Files shipped with a job: a stop-word list, a model, a lookup table.

A job names them on its class (``FILES = ["stopwords.txt"]``, relative to the job file),
on the command line (``--file PATH``), or as a :data:`kubemr.options.File` option. Before any task
starts they are found, checked against the limits and hashed (:func:`local_files`), then
stored content-addressed, ``<dir>/<sha256>/<name>`` (:func:`upload`): in the work dir by
``kubemr run``, beside the pickled code by ``kubemr submit``, whose resource lists them in
``spec.job.files``. Every task reads them by name as ``self.files[NAME]``: a local path, the
stored file itself on a local disk, or a copy downloaded once per process (a pod) into
``$TMPDIR`` and checked against its sha256 (:class:`JobFiles`).

The list of shipped files reaches the tasks in the plan's parameters, under the reserved
name :data:`MANIFEST_PARAM`, which ``MapReduce.params`` takes apart from the user's.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field

from kubemr import storage
from kubemr.errors import CodeIntegrityError, InputError
from kubemr.options import (
    RESERVED_PREFIX,
    file_fields,
    options_model,
    split_file_ref,
)
from kubemr.sizes import format_size
from kubemr.spec import (
    JOB_FILE_NAME_PATTERN,
    MAX_JOB_FILE_BYTES,
    MAX_JOB_FILE_NAME,
    MAX_JOB_FILES,
    MAX_JOB_FILES_BYTES,
)
from kubemr.storage import StorageOptions

MANIFEST_PARAM = RESERVED_PREFIX + "files"
"""The plan parameter that holds the shipped files' manifest (JSON)."""
SCRATCH_DIR = "kubemr-files"
"""Under ``$TMPDIR``: where a worker keeps the files it downloaded, per job."""
CHUNK = 1 << 20


class FileIntegrityError(CodeIntegrityError):
    """A shipped file's content is not what the job was planned with: deterministic, as
    changed job code is, so the task fails at once instead of being retried."""


@dataclass(frozen=True)
class FileRef:
    """A file a job asks for: the path as given, the directory it is relative to, the
    name tasks read it by, and where it was asked for (for messages)."""

    path: str
    name: str
    origin: str
    base: str = ""

    def local_path(self) -> str:
        return os.path.abspath(os.path.join(self.base, os.path.expanduser(self.path)))


@dataclass(frozen=True)
class LocalFile:
    """A file on this machine, checked and hashed, ready to ship."""

    name: str
    path: str
    size: int
    sha256: str
    origin: str


@dataclass(frozen=True)
class ShippedFile:
    """A file in storage, as tasks fetch it."""

    name: str
    url: str
    sha256: str
    size: int | None = None


@dataclass
class Manifest:
    """The shipped files of one job, and where its workers keep their copies."""

    files: list[ShippedFile] = field(default_factory=list)
    scratch: str = "job"  # the job id: a directory under $TMPDIR/kubemr-files
    s3_endpoint: str | None = None

    def to_param(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_param(cls, text: str) -> Manifest:
        data = json.loads(text)
        return cls(
            files=[ShippedFile(**f) for f in data.get("files", [])],
            scratch=str(data.get("scratch") or "job"),
            s3_endpoint=data.get("s3_endpoint"),
        )


# --------------------------------------------------------------------------- what a job asks for


def job_dir(job_cls: type) -> str:
    """The directory of the job's file: what ``FILES`` and file options' defaults are
    relative to (the current directory when the class has no file)."""
    module = sys.modules.get(job_cls.__module__)
    filename = getattr(module, "__file__", None)
    return os.path.dirname(os.path.abspath(filename)) if filename else os.getcwd()


def needed_files(job_cls: type, params: Mapping[str, str]) -> list[FileRef]:
    """The files the job class asks for: its ``FILES`` and its file options (a value given
    as a parameter is relative to the current directory, a default to the job file),
    each under the name tasks read it by (:func:`file_option_names`)."""
    base = job_dir(job_cls)
    refs = [
        FileRef(path, name, f"{job_cls.__name__}.FILES", base) for path, name in _declared(job_cls)
    ]
    names = file_option_names(job_cls, params)
    for option, (value, given) in _file_options(job_cls, params).items():
        if given:
            where, origin = os.getcwd(), f"option {option} (--param {option}=...)"
        else:
            where, origin = base, f"option {option}'s default"
        refs.append(FileRef(split_file_ref(value)[0], names[option], origin, where))
    return refs


def file_option_names(job_cls: type, params: Mapping[str, str]) -> dict[str, str]:
    """The name each file option's file is shipped and read by (pure: the same in every
    process, from the class and the parameters alone).

    ``PATH#NAME`` names it; else its base name, unless that names a ``FILES`` entry or
    another file option's file: then a name of its own, ``stem-1.ext``, ``stem-2.ext``...
    (as mrjob names a file option's file apart from ``FILES``). A default that is the
    ``FILES`` entry of its name (the same path, from the job file) is that file."""
    declared = dict((name, path) for path, name in _declared(job_cls))
    options = _file_options(job_cls, params)
    # Names given explicitly are taken first: a name of its own never takes one of them.
    taken = set(declared) | {split_file_ref(v)[1] for v, _ in options.values() if "#" in v}
    names: dict[str, str] = {}
    for option, (value, given) in options.items():
        path, name = split_file_ref(value)
        if "#" not in value:
            same_file = not given and declared.get(name) == path
            if name in taken and not same_file:
                name = unique_name(name, taken)
            taken.add(name)
        names[option] = name
    return names


def unique_name(name: str, taken: set[str]) -> str:
    """``name`` with ``-1``, ``-2``... before its extension (everything from its first
    dot, as mrjob's ``file_ext``): the first that is not taken."""
    stem = name.lstrip(".")
    dot = stem.find(".")
    ext = "" if dot < 0 else stem[dot:]
    prefix = name[: len(name) - len(ext)]
    n = 1
    while f"{prefix}-{n}{ext}" in taken:
        n += 1
    return f"{prefix}-{n}{ext}"


def _declared(job_cls: type) -> list[tuple[str, str]]:
    """The class's ``FILES`` as ``(path, name)``."""
    declared = getattr(job_cls, "FILES", ()) or ()
    if isinstance(declared, str):
        declared = [declared]
    return [split_file_ref(str(entry)) for entry in declared]


def _file_options(job_cls: type, params: Mapping[str, str]) -> dict[str, tuple[str, bool]]:
    """Each file option that names a file: its value, and whether it was given (else its
    default), in the order of the ``Options`` fields."""
    model = options_model(job_cls)
    found: dict[str, tuple[str, bool]] = {}
    for option in file_fields(model):
        assert model is not None
        if option in params:
            found[option] = (params[option], True)
            continue
        default = model.model_fields[option].default
        if isinstance(default, str) and default:
            found[option] = (default, False)  # else required (refused elsewhere) or None
    return found


def extra_files(paths: Sequence[str]) -> list[FileRef]:
    """``--file PATH[#NAME]``, relative to the current directory."""
    refs = []
    for text in paths:
        path, name = split_file_ref(text)
        refs.append(FileRef(path, name, f"--file {text}", os.getcwd()))
    return refs


def check_name(ref: FileRef) -> None:
    if len(ref.name) > MAX_JOB_FILE_NAME or not re.match(JOB_FILE_NAME_PATTERN, ref.name):
        raise InputError(
            f"{ref.origin}: {ref.name!r} cannot name a shipped file (letters, digits, '.', "
            f"'_', '+', '-', at most {MAX_JOB_FILE_NAME} characters, not starting with a dot):"
            f" give another as {ref.path}#NAME"
        )


def local_files(refs: Sequence[FileRef]) -> list[LocalFile]:
    """Each file checked (it exists, is a readable regular file, within the limits) and
    hashed, once per name: an :class:`InputError` naming the file otherwise."""
    found: dict[str, LocalFile] = {}
    total = 0
    for ref in refs:
        check_name(ref)
        path = ref.local_path()
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise InputError(f"{ref.origin}: file {ref.path} does not exist ({path})") from None
        except OSError as exc:
            raise InputError(f"{ref.origin}: file {ref.path}: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{ref.origin}: {ref.path} is not a regular file ({path})")
        if st.st_size > MAX_JOB_FILE_BYTES:
            raise InputError(
                f"{ref.origin}: file {ref.path} is {format_size(st.st_size)}, more than the "
                f"{format_size(MAX_JOB_FILE_BYTES)} a shipped file may have (every worker "
                "downloads it): read larger data as an input, or from storage in setup()"
            )
        digest = _sha256_of(path, ref)
        earlier = found.get(ref.name)
        if earlier is not None:
            if earlier.sha256 != digest:
                raise InputError(
                    f"two different files are named {ref.name}: {earlier.path} "
                    f"({earlier.origin}) and {path} ({ref.origin}); give one another name "
                    f"with PATH#NAME"
                )
            continue
        total += st.st_size
        if total > MAX_JOB_FILES_BYTES:
            raise InputError(
                f"the files shipped with the job add up to more than "
                f"{format_size(MAX_JOB_FILES_BYTES)} (at {ref.path}, {ref.origin}): read "
                "larger data as an input"
            )
        found[ref.name] = LocalFile(ref.name, path, st.st_size, digest, ref.origin)
    if len(found) > MAX_JOB_FILES:
        raise InputError(
            f"a job ships at most {MAX_JOB_FILES} files, and this one names {len(found)}: "
            "put them in an archive, or read them from storage"
        )
    return list(found.values())


def _sha256_of(path: str, ref: FileRef) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise InputError(f"{ref.origin}: cannot read {ref.path}: {exc.strerror}") from None
    return digest.hexdigest()


# --------------------------------------------------------------------------- storing them


def file_url(directory: str, sha256: str, name: str) -> str:
    """Content-addressed: the same bytes under the same name are stored once."""
    return storage.join(directory, sha256, name)


def shipped(files: Sequence[LocalFile], directory: str) -> list[ShippedFile]:
    """Where :func:`upload` puts each file (pure)."""
    return [
        ShippedFile(f.name, file_url(directory, f.sha256, f.name), f.sha256, f.size) for f in files
    ]


def upload(files: Sequence[LocalFile], directory: str, options: StorageOptions) -> list[bool]:
    """Store each file under ``directory`` unless an object of its size is there already
    (its name holds its hash); whether each was uploaded now."""
    done = []
    for f, target in zip(files, shipped(files, directory)):
        store = storage.store_for(target.url, options)
        try:
            if store.stat(target.url).size == f.size:
                done.append(False)
                continue
        except FileNotFoundError:
            pass
        digest = hashlib.sha256()
        with open(f.path, "rb") as src, store.open_write(target.url) as dst:
            while chunk := src.read(CHUNK):
                digest.update(chunk)
                dst.write(chunk)
            if digest.hexdigest() != f.sha256:
                # Changed since it was hashed: leaving nothing is better than a wrong file
                # under this hash's name.
                raise InputError(
                    f"{f.origin}: {f.path} changed while it was being shipped; try again"
                )
        done.append(True)
    return done


def check_shipped(files: Sequence[ShippedFile], options: StorageOptions) -> list[ShippedFile]:
    """The files a resource lists, each found in storage and within the limits, with its
    size: a missing one is named before any task starts."""
    out = []
    total = 0
    for f in files:
        try:
            size = storage.store_for(f.url, options).stat(f.url).size
        except FileNotFoundError:
            raise InputError(
                f"shipped file {f.name} ({f.url}, spec.job.files) does not exist: submit the "
                "job again (kubemr submit uploads the files it ships)"
            ) from None
        if size > MAX_JOB_FILE_BYTES:
            raise InputError(
                f"shipped file {f.name} ({f.url}) is {format_size(size)}, more than the "
                f"{format_size(MAX_JOB_FILE_BYTES)} a shipped file may have"
            )
        total += size
        if total > MAX_JOB_FILES_BYTES:
            raise InputError(
                f"the files of spec.job.files add up to more than "
                f"{format_size(MAX_JOB_FILES_BYTES)}"
            )
        out.append(ShippedFile(f.name, f.url, f.sha256, size))
    return out


# --------------------------------------------------------------------------- in a task


_fetched: dict[tuple[str, str], str] = {}
"""(url, sha256) -> the checked local path, for this process: once per worker or pod."""
_fetch_lock = threading.Lock()


class JobFiles(Mapping[str, str]):
    """``self.files``: the name of each shipped file -> its local path, fetched on first
    use (a reducer that never reads a file never downloads it)."""

    def __init__(self, manifest: Manifest | None) -> None:
        self._manifest = manifest or Manifest()
        self._by_name = {f.name: f for f in self._manifest.files}

    def __getitem__(self, name: str) -> str:
        entry = self._by_name.get(name)
        if entry is None:
            shipped = ", ".join(self._by_name) or "none"
            raise KeyError(
                f"no file named {name!r} was shipped with the job (shipped: {shipped}); ship "
                "it with FILES = [...] on the job class or --file PATH"
            )
        return fetch(entry, self._manifest)

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        return f"JobFiles({list(self._by_name)})"


def fetch(entry: ShippedFile, manifest: Manifest) -> str:
    """The local path of a shipped file, checked against its sha256 once per process."""
    key = (entry.url, entry.sha256)
    with _fetch_lock:
        found = _fetched.get(key)
        if found is not None:
            return found
        if storage.is_remote(entry.url):
            path = _download(entry, manifest)
        else:
            path = storage.local_path(entry.url)
            _verify(path, entry)
        _fetched[key] = path
        return path


def scratch_dir(scratch: str) -> str:
    return os.path.join(tempfile.gettempdir(), SCRATCH_DIR, scratch)


def _download(entry: ShippedFile, manifest: Manifest) -> str:
    target = os.path.join(scratch_dir(manifest.scratch), entry.sha256, entry.name)
    if os.path.exists(target):
        try:
            _verify(target, entry)
            return target  # another worker process of this machine fetched it
        except FileIntegrityError:
            pass
    os.makedirs(os.path.dirname(target), exist_ok=True)
    part = f"{target}.{os.getpid()}.part"
    options = StorageOptions(s3_endpoint=manifest.s3_endpoint)
    digest = hashlib.sha256()
    size = 0
    try:
        with (
            storage.store_for(entry.url, options).open_read(entry.url) as src,
            open(part, "wb") as dst,
        ):
            while chunk := src.read(CHUNK):
                size += len(chunk)
                if size > MAX_JOB_FILE_BYTES:
                    raise FileIntegrityError(
                        f"shipped file {entry.name} ({entry.url}) is larger than the "
                        f"{format_size(MAX_JOB_FILE_BYTES)} a shipped file may have"
                    )
                digest.update(chunk)
                dst.write(chunk)
        _same_digest(entry, digest.hexdigest())
        os.replace(part, target)
    except FileNotFoundError:
        raise FileIntegrityError(
            f"shipped file {entry.name} is gone from {entry.url}: it was deleted after the "
            "job was planned"
        ) from None
    finally:
        if os.path.exists(part):
            os.unlink(part)
    return target


def _verify(path: str, entry: ShippedFile) -> None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
    except FileNotFoundError:
        raise FileIntegrityError(
            f"shipped file {entry.name} is gone from {path}: it was deleted after the job "
            "was planned"
        ) from None
    _same_digest(entry, digest.hexdigest())


def _same_digest(entry: ShippedFile, found: str) -> None:
    if found != entry.sha256:
        raise FileIntegrityError(
            f"shipped file {entry.name} ({entry.url}) is not the file the job was planned "
            f"with: its sha256 is {found}, not {entry.sha256}. It was changed after the job "
            "started; run the job again"
        )


def remove_scratch(scratch: str) -> None:
    """Remove this machine's downloaded copies of a job's files (``kubemr run``'s end)."""
    shutil.rmtree(scratch_dir(scratch), ignore_errors=True)
