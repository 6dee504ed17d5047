"""Every job setting, its default and its constraints, defined once.

The models here are the source of the local run options (:class:`LocalOptions`), of the
``MapReduceJob`` custom resource (:class:`MapReduceJobSpec`, :class:`MapReduceJobStatus`,
turned into the CRD's schema by :mod:`kubemr.crd`) and of the command-line help: each
field's description is the text users read in all three places.

Python names are snake_case; the resource's JSON names are their camelCase aliases, and
both are accepted on input::

    >>> JobOptions(inputs=["s3://b/in/*.txt"], output="s3://b/out", splitSize="16Mi").split_size
    16777216

Constraints that the CRD must enforce too are written twice, side by side: as a pydantic
validator (for Python callers and for the controller reading a resource) and as a CEL rule
under ``x-kubernetes-validations`` in the schema (so that ``kubectl apply`` refuses the
resource before anything runs).
"""

from __future__ import annotations

import importlib.metadata
import posixpath
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from kubemr.errors import OptionError
from kubemr.formats import DEFAULT_CHUNK_BYTES, UTF8, check_encoding, reads_whole_files
from kubemr.sizes import _UNITS, parse_size


def _kubemr_version() -> str:
    # This module may be imported while the kubemr package initialises, before
    # ``kubemr.__version__`` is set: the version comes from the installed distribution,
    # or from the package's source when it runs from a checkout without being installed.
    try:
        return importlib.metadata.version("kubemr")
    except importlib.metadata.PackageNotFoundError:
        source = Path(__file__).with_name("__init__.py").read_text()
        found = re.search(r'^__version__ = "([^"]+)"', source, re.M)
        return found.group(1) if found else "latest"


KUBEMR_VERSION = _kubemr_version()
KUBEMR_IMAGE = f"ghcr.io/kubemr/kubemr:{KUBEMR_VERSION}"
"""The worker image a resource runs unless ``template.image`` names another."""

DEFAULT_MEMORY = 512 << 20
MIN_MEMORY = 64 << 10
MAX_SOURCE_BYTES = 64 << 10
"""Inline job source is stored in etcd with the resource; larger code ships in the image
(``job.module``) or as a pickle in storage (``job.pickle``)."""
DEFAULT_PENDING_DEADLINE_SECONDS = 600

MAX_NAME_LENGTH = 50
"""A resource's name prefixes the names of the Jobs it owns (``<name>-s12-reduce``), which
Kubernetes caps at 63 characters because they become label values."""
MAX_STEPS = 64
"""Steps a job may have on Kubernetes; it bounds the per-step lists in the status."""
MAX_WAVES = 2 * MAX_STEPS + 2
"""A plan wave, a map and a reduce wave per step, and a commit wave."""
MAX_CONDITIONS = 8
MAX_CONDITION_MESSAGE = 4096
MAX_FAILURE_MESSAGE = 4096
MAX_TRACEBACK_BYTES = 1024
MAX_COUNTER_GROUPS = 16
MAX_COUNTERS_PER_GROUP = 32
MAX_COUNTER_NAME = 64
MAX_URL = 2048

# Limits of the spec's free-form fields, so that no resource is larger than a job needs and
# the API server's CEL cost estimates stay bounded. The whole resource also stays within
# what etcd stores (about 1.5 MiB).
MAX_INPUTS = 256
"""Inputs a resource may list; a glob or a directory stands for any number of files."""
MAX_PARAMS = 64
MAX_PARAM_KEY = 256
MAX_TEXT = 4096
"""A parameter's or an environment variable's value, an annotation's, a command's word."""
MAX_ENV = 64
MAX_LIST = 32
"""Tolerations, command words, affinity terms and other short lists."""
MAX_LABELS = 32
MAX_LABEL_KEY = 317
"""A label or annotation key: a 253-character DNS prefix, "/" and a 63-character name."""
MAX_LABEL_VALUE = 63
MAX_IMAGE = 1024
MAX_QUANTITY = 64
MAX_ENCODING = 64
"""A text encoding's name (Python's codec names are short: ``utf-8``, ``cp1252``)."""
ENCODING_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:+-]*$"
STDIN = "-"
"""The input that stands for standard input (``kubemr run -i -``)."""
MAX_RESOURCES = 16
MAX_JOB_FILES = 32
"""Files shipped with a job (``FILES``, ``--file``, file options)."""
MAX_JOB_FILE_NAME = 128
MAX_JOB_FILE_BYTES = 512 << 20
"""A shipped file is downloaded by every worker pod that reads it: larger data is an input."""
MAX_JOB_FILES_BYTES = 2 << 30
"""All the files shipped with one job, together."""
JOB_FILE_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9._+-]*$"
"""A shipped file's name: a plain file name (no directory, no leading dot), the same on
every system."""
FORBIDDEN_ANNOTATION_PREFIXES = (
    "container.apparmor.security.beta.kubernetes.io/",
    "seccomp.security.alpha.kubernetes.io/",
    "container.seccomp.security.alpha.kubernetes.io/",
)
"""Annotations that would set a worker's AppArmor or seccomp profile (``unconfined``)
apart from the pod's own securityContext: refused, so the hardening stays whole."""

InputFormat = Literal["text", "jsonl", "csv", "bytes", "raw"]
DecodeErrors = Literal["strict", "replace", "surrogateescape", "latin-1"]
OutputFormat = Literal["jsonl", "tsv", "text", "json-value", "raw-value"]
PullPolicy = Literal["Always", "IfNotPresent", "Never"]
Phase = Literal["Pending", "Planning", "Running", "Suspended", "Succeeded", "Failed"]
WaveKind = Literal["plan", "map", "reduce", "commit"]

_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_MODULE_REF = rf"^{_IDENTIFIER}(\.{_IDENTIFIER})*(:{_IDENTIFIER})?$"
_SHA256 = r"^[0-9a-f]{64}$"
# kubemr.sizes.parse_size's grammar, written for OpenAPI (no inline flags): digits with an
# optional fraction, then an optional unit in any letter case.
SIZE_PATTERN = r"^\s*[0-9]+(\.[0-9]+)?\s*([kKmMgGtT][iI]?[bB]?|[bB])?\s*$"
# Kubernetes' resource.Quantity grammar, as its own OpenAPI schema writes it.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


def _rules(*pairs: tuple[str, str]) -> dict[str, Any]:
    """``x-kubernetes-validations`` for a schema: CEL rules with the messages users see."""
    return {"x-kubernetes-validations": [{"rule": r, "message": m} for r, m in pairs]}


# -- byte sizes: an int, or a string parse_size understands ----------------------------------


def _size_or_value(value: Any) -> Any:
    # Only strings are parsed: ints (and wrong types) go on to the strict int check, so a
    # float or a bool is refused rather than truncated.
    return parse_size(value) if isinstance(value, str) else value


def _size_floor_rule(minimum: int) -> tuple[str, str]:
    # SIZE_PATTERN has checked the form; the factor depends on the unit's letter and an "i"
    # only ("KiB" is "ki", "b" is "", as in kubemr.sizes).
    factors = {unit.removesuffix("b"): factor for unit, factor in _UNITS.items()}
    units = ", ".join(f"'{unit}': {factor}.0" for unit, factor in factors.items())
    rule = (
        f"type(self) == int || !self.matches(r'{SIZE_PATTERN}') || "
        "double(self.find('[0-9]+([.][0-9]+)?'))"
        f" * {{{units}}}[self.lowerAscii().find('[kmgt]i?')] >= {minimum}.0"
    )
    return rule, f"must be at least {minimum} bytes ({minimum >> 10} KiB)"


class _SizeJsonSchema:
    """The schema of a byte size: ``{anyOf: [integer, string]}``, the form
    :mod:`kubemr.crd` turns into ``x-kubernetes-int-or-string``.

    The integer branch carries the field's ``minimum``; a string's value is only known once
    parsed, so the same floor is a CEL rule for strings.
    """

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        number = handler(core_schema)
        schema: dict[str, Any] = {
            "anyOf": [number, {"type": "string", "maxLength": 32, "pattern": SIZE_PATTERN}]
        }
        minimum = number.get("minimum", 0)
        if minimum > 0:
            schema.update(_rules(_size_floor_rule(minimum)))
        return schema


ByteSize = Annotated[
    int, Field(strict=True, ge=0), BeforeValidator(_size_or_value), _SizeJsonSchema
]
"""Bytes, given as an int or as a string like ``64Mi``, ``64MiB`` or ``1G``; stored as int."""
MemorySize = Annotated[
    int, Field(strict=True, ge=MIN_MEMORY), BeforeValidator(_size_or_value), _SizeJsonSchema
]
"""A :data:`ByteSize` of at least :data:`MIN_MEMORY`."""


def _quantity(value: Any) -> Any:
    # YAML readers write ``cpu: 1``; Kubernetes takes numbers and strings alike.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class _QuantityJsonSchema:
    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        string = {"type": "string", "maxLength": MAX_QUANTITY, "pattern": QUANTITY_PATTERN}
        return {"anyOf": [{"type": "integer"}, string]}


Quantity = Annotated[
    str,
    BeforeValidator(_quantity),
    Field(max_length=MAX_QUANTITY, pattern=QUANTITY_PATTERN),
    _QuantityJsonSchema,
]
"""A Kubernetes resource quantity (``500m``, ``2Gi``, ``1``), kept as its string."""


def _rfc3339(moment: datetime) -> str:
    # Kubernetes writes its own times (metav1.Time) in whole seconds, in UTC.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


Timestamp = Annotated[datetime, PlainSerializer(_rfc3339, return_type=str, when_used="json")]
"""A moment; read from any ISO 8601 form, written as Kubernetes writes times."""


def _utf8_at_most(limit: int) -> AfterValidator:
    def check(text: str) -> str:
        size = len(text.encode())
        if size > limit:
            raise ValueError(f"is {size} bytes of UTF-8, more than the {limit} allowed")
        return text

    return AfterValidator(check)


def _keep_tail(limit: int) -> BeforeValidator:
    """Cut a text to its last ``limit`` bytes of UTF-8: the end of a traceback names the
    error. Status texts are cut, not refused, so a long message never blocks a status write."""

    def cut(text: Any) -> Any:
        if isinstance(text, str) and len(text.encode()) > limit:
            return text.encode()[-limit:].decode(errors="ignore")
        return text

    return BeforeValidator(cut)


def _keep_head(limit: int) -> BeforeValidator:
    def cut(text: Any) -> Any:
        if isinstance(text, str) and len(text.encode()) > limit:
            return text.encode()[:limit].decode(errors="ignore")
        return text

    return BeforeValidator(cut)


def _map(entries: int, key: int, value: int) -> Any:
    """A string-to-string map of at most ``entries`` entries, keys of at most ``key`` and
    values of at most ``value`` characters (:mod:`kubemr.crd` turns the key limit into a
    CEL rule, which a structural schema needs)."""
    return dict[
        Annotated[str, Field(min_length=1, max_length=key)],
        Annotated[str, Field(max_length=value)],
    ]


_Labels = _map(MAX_LABELS, MAX_LABEL_KEY, MAX_LABEL_VALUE)
_Annotations = _map(MAX_LABELS, MAX_LABEL_KEY, MAX_TEXT)
_Params = _map(MAX_PARAMS, MAX_PARAM_KEY, MAX_TEXT)


def _no_forbidden_annotations(annotations: dict[str, str]) -> dict[str, str]:
    for key in annotations:
        if key.startswith(FORBIDDEN_ANNOTATION_PREFIXES):
            raise ValueError(
                f"annotation {key!r} would change the workers' AppArmor or seccomp profile: "
                "worker pods always run with the runtime's default profiles"
            )
    return annotations


_ANNOTATION_RULE = (
    "self.all(k, "
    + " && ".join(f"!k.startsWith('{p}')" for p in FORBIDDEN_ANNOTATION_PREFIXES)
    + ")",
    "annotations must not set the workers' AppArmor or seccomp profile "
    "(container.apparmor.security.beta.kubernetes.io/, seccomp.security.alpha.kubernetes.io/): "
    "worker pods always run with the runtime's default profiles",
)


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_assignment=True,
        # Validators are built at first use: a worker that never validates a spec does
        # not pay for building every model at import.
        defer_build=True,
    )

    @classmethod
    def checked(cls, **values: Any) -> Self:
        """The model, or an :class:`OptionError` naming the setting and what it takes.

        Example:
            ``LocalOptions.checked(inputs=["in/"], output="out/", workers=0)`` raises
            ``OptionError("invalid workers=0: input should be greater than or equal to 1")``.
        """
        try:
            return cls(**values)
        except ValidationError as exc:
            err = exc.errors()[0]
            name = ".".join(str(p) for p in err["loc"]) or "options"
            msg = err["msg"].removeprefix("Value error, ")
            raise OptionError(
                f"invalid {name}={err.get('input')!r}: {msg[:1].lower()}{msg[1:]}"
            ) from None

    def to_resource(self) -> dict[str, Any]:
        """The JSON form the API server takes: camelCase names, and a None left out where
        the field's default is None too.

        A None whose default is something else is kept as null, because leaving it out
        would let the API server fill in that default (``pendingDeadlineSeconds: null``
        waits forever; absent, it is 600).
        """
        return _pruned(self, self.model_dump(mode="json", by_alias=True))


def _pruned(model: _Model, data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if value is None and info.default is None:
            continue
        key = info.alias or name
        out[key] = _pruned_value(value, data[key])
    return out


def _pruned_value(value: Any, data: Any) -> Any:
    if isinstance(value, _Model):
        return _pruned(value, data)
    if isinstance(value, list):
        return [_pruned_value(v, d) for v, d in zip(value, data)]
    if isinstance(value, dict):
        return {k: _pruned_value(v, data[k]) for k, v in value.items()}
    return data


# -- the settings of every run ---------------------------------------------------------------


def _text_encoding(name: str) -> str:
    check_encoding(name)  # a ValueError says why kubemr cannot read lines in it
    return name


def _no_stdin(inputs: list[str]) -> list[str]:
    if STDIN in inputs:
        raise ValueError(
            "standard input (-i -) is read by kubemr run only, which copies it to its work "
            "dir: a job on Kubernetes reads its inputs from storage; upload the data and "
            "name it (e.g. s3://bucket/in.txt)"
        )
    return inputs


class JobOptions(_Model):
    """The settings a run on this machine and a run on Kubernetes share."""

    inputs: list[Annotated[str, Field(min_length=1)]] = Field(
        min_length=1,
        description="Input files, directories or globs (data/**/*.txt, s3://b/p/*.gz).",
        json_schema_extra=_rules(
            ("size(self) >= 1", "give at least one input: a URI, a directory or a glob")
        ),
    )
    input_format: InputFormat | None = Field(
        None,
        description="Input record format (default: the job class's INPUT_FORMAT, else text).",
    )
    output: str = Field(
        min_length=1,
        description="Output directory (a local path or s3://bucket/prefix).",
    )
    output_format: OutputFormat | None = Field(
        None,
        description=(
            "Output format (default: the job class's OUTPUT_FORMAT or OUTPUT_PROTOCOL, else jsonl)."
        ),
    )
    reducers: int | None = Field(
        None,
        ge=0,
        strict=True,
        description="Reduce tasks (default: from the input size and workers; 0: map-only).",
    )
    split_size: ByteSize | None = Field(
        None,
        description="Bytes per map task, e.g. 64Mi (default 64 MiB, less for small inputs; "
        "0: one split per file).",
    )
    memory: MemorySize = Field(
        DEFAULT_MEMORY,
        description="Memory budget per worker process, e.g. 512Mi; buffers spill to disk past it.",
    )
    max_attempts: int = Field(
        3, ge=1, strict=True, description="Attempts per task before the job fails."
    )
    skip_bad_records: int = Field(
        0,
        ge=0,
        strict=True,
        description="Skip and count up to this many malformed JSON/CSV records, or lines "
        "that do not decode in the encoding.",
    )
    encoding: Annotated[
        str,
        Field(min_length=1, max_length=MAX_ENCODING, pattern=ENCODING_PATTERN),
        AfterValidator(_text_encoding),
    ] = Field(
        UTF8,
        description="Text encoding of the inputs: a Python codec (utf-8, latin-1, cp1252, "
        "shift_jis, utf-16, ...); UTF-16 and UTF-32 files are read whole, a task each.",
    )
    decode_errors: DecodeErrors = Field(
        "strict",
        description="A line not valid in the encoding: strict fails the task naming file "
        "and byte offset (a bad record with --skip-bad-records); replace, surrogateescape "
        "or latin-1 decode it so and count it (counter map_input_undecodable_lines).",
    )
    params: dict[str, str] = Field(
        default_factory=dict,
        description="Job parameters, read by the job as self.params[KEY].",
    )
    overwrite: bool = Field(
        False, description="Replace the contents of a non-empty output directory."
    )

    @field_validator("decode_errors")
    @classmethod
    def _escapable(cls, value: str, info: ValidationInfo) -> str:
        encoding = info.data.get("encoding")
        if value == "surrogateescape" and encoding and reads_whole_files(encoding):
            raise ValueError(
                f"surrogateescape stands for single bytes that do not decode, which "
                f"{encoding} does not have: use replace or latin-1"
            )
        return value


class LocalOptions(JobOptions):
    """The settings of a run on this machine (``kubemr run``, ``kubemr.run()``)."""

    workers: int | None = Field(
        None,
        ge=1,
        strict=True,
        description="Worker processes (default: the CPUs available to kubemr).",
    )
    work_dir: str | None = Field(
        None, description="Where plan and shuffle data go (default: a temporary directory)."
    )
    keep_work: bool = Field(False, description="Keep the work dir after the job.")
    s3_endpoint: str | None = Field(
        None, description="S3-compatible endpoint URL (default: $AWS_ENDPOINT_URL_S3)."
    )
    chunk_bytes: int = Field(
        DEFAULT_CHUNK_BYTES,
        ge=1,
        strict=True,
        description="Bytes of input read at a time: records reach the mapper in chunks of "
        "about this size.",
    )
    extra: dict[str, Any] = Field(
        default_factory=dict, description="Settings for experiments, stored in the plan."
    )
    files: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list,
        max_length=MAX_JOB_FILES,
        description="A local file shipped with the job, read in every task as "
        "self.files[NAME] (PATH, or PATH#NAME to rename it); repeatable.",
    )


# -- the MapReduceJob resource: spec ---------------------------------------------------------


class PickledJob(_Model):
    """A job class pickled with cloudpickle and stored in object storage."""

    url: str = Field(
        min_length=1, max_length=MAX_URL, description="Storage URL of the cloudpickle blob."
    )
    sha256: str = Field(
        max_length=64,
        pattern=_SHA256,
        description="SHA-256 of the blob (64 lowercase hex digits), checked before the worker "
        "unpickles it.",
    )


class JobFile(_Model):
    """A file shipped with the job, in storage, content-addressed."""

    name: str = Field(
        min_length=1,
        max_length=MAX_JOB_FILE_NAME,
        pattern=JOB_FILE_NAME_PATTERN,
        description="The name tasks read it by (self.files[NAME]): a plain file name.",
    )
    url: str = Field(
        min_length=1, max_length=MAX_URL, description="Storage URL of the file's content."
    )
    sha256: str = Field(
        max_length=64,
        pattern=_SHA256,
        description="SHA-256 of the content (64 lowercase hex digits), checked by every "
        "worker that downloads it.",
    )


def _unique_file_names(files: list[JobFile] | None) -> list[JobFile] | None:
    names = [f.name for f in files or ()]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(
            f"two files are named {twice[0]}: each shipped file needs a name of its own"
        )
    return files


class JobCode(_Model):
    """The job's code: exactly one of module, pickle or source."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            (
                "(has(self.module) ? 1 : 0) + (has(self.pickle) ? 1 : 0)"
                " + (has(self.source) ? 1 : 0) == 1",
                "give exactly one of job.module, job.pickle or job.source",
            ),
            ("!has(self.className) || has(self.source)", "className goes with job.source"),
            # Checked here rather than on source itself so that an error does not quote the
            # whole text back.
            (
                f"!has(self.source) || size(bytes(self.source)) <= {MAX_SOURCE_BYTES}",
                f"job.source is limited to {MAX_SOURCE_BYTES // 1024} KiB of UTF-8: ship larger "
                "code in the image (job.module) or in storage (job.pickle)",
            ),
        )
    )

    module: str | None = Field(
        None,
        max_length=MAX_IMAGE,
        pattern=_MODULE_REF,
        description="package.module:Class, importable in the worker image (the class may be "
        "left out when the module defines one job class).",
    )
    pickle: PickledJob | None = Field(
        None,
        description="The job class as a cloudpickle blob in storage: how a job defined in a "
        "Python session travels.",
    )
    source: Annotated[str, _utf8_at_most(MAX_SOURCE_BYTES)] | None = Field(
        None,
        max_length=MAX_SOURCE_BYTES,
        description=f"Python source defining the job class, inline (at most "
        f"{MAX_SOURCE_BYTES // 1024} KiB of UTF-8).",
    )
    class_name: str | None = Field(
        None,
        max_length=MAX_PARAM_KEY,
        pattern=rf"^{_IDENTIFIER}$",
        description="The job class in source (default: the one MapReduce subclass defined).",
    )
    files: Annotated[list[JobFile] | None, AfterValidator(_unique_file_names)] = Field(
        None,
        max_length=MAX_JOB_FILES,
        description="Files shipped with the job (a stop-word list, a model), downloaded by "
        "each worker that reads one and checked against its sha256.",
        json_schema_extra=_rules(
            (
                "self.all(f, self.exists_one(g, g.name == f.name))",
                "each shipped file needs a name of its own",
            )
        ),
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [n for n in ("module", "pickle", "source") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of job.module, job.pickle or job.source"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.class_name is not None and self.source is None:
            raise ValueError("className goes with job.source")
        return self


class SecretRef(_Model):
    name: str = Field(max_length=253, pattern=_DNS_SUBDOMAIN, description="The Secret's name.")


class StorageSpec(_Model):
    """How workers reach object storage; the controller itself never does."""

    endpoint: str | None = Field(
        None, max_length=MAX_URL, description="S3-compatible endpoint URL (default: AWS S3)."
    )
    region: str | None = Field(None, max_length=64, description="The storage region.")
    secret_ref: SecretRef | None = Field(
        None,
        description="A Secret in the resource's namespace whose keys become the workers' "
        "environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, ...).",
    )


class WorkerRange(_Model):
    """How many worker pods a wave runs at once, following the tasks not yet done."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            ("self.min <= self.max", "workers.min must not exceed workers.max")
        )
    )

    min: int = Field(
        0, ge=0, strict=True, description="Fewest pods a wave runs while it has tasks left."
    )
    max: int = Field(8, ge=1, strict=True, description="Most pods a wave runs at once.")
    max_pending: int = Field(
        2,
        ge=1,
        strict=True,
        description="Pods asked for beyond those placed on a node: at most this many of a "
        "wave's pods wait for a node at once (at least 1: a wave grows only by asking).",
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min > self.max:
            raise ValueError(f"workers.min ({self.min}) must not exceed workers.max ({self.max})")
        return self


_ResourceName = Annotated[str, Field(min_length=1, max_length=253)]


class ResourceRequirements(_Model):
    requests: dict[_ResourceName, Quantity] = Field(
        default_factory=dict,
        max_length=MAX_RESOURCES,
        description="Resources the scheduler reserves (cpu, memory).",
    )
    limits: dict[_ResourceName, Quantity] = Field(
        default_factory=dict,
        max_length=MAX_RESOURCES,
        description="Resources a worker may not exceed.",
    )


class KeyRef(_Model):
    """A key of a Secret or ConfigMap in the resource's own namespace (a pod can name no
    other)."""

    name: str = Field(
        max_length=253, pattern=_DNS_SUBDOMAIN, description="The Secret's or ConfigMap's name."
    )
    key: str = Field(
        min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="The key."
    )
    optional: bool | None = Field(None, description="Whether the key may be missing.")


class FieldRef(_Model):
    """A field of the worker's own pod."""

    api_version: str | None = Field(None, max_length=64, description="Usually v1.")
    field_path: str = Field(
        min_length=1, max_length=256, description="The field, e.g. metadata.name."
    )


class ResourceFieldRef(_Model):
    """A request or limit of the worker container."""

    container_name: str | None = Field(None, max_length=63, description="The container.")
    resource: str = Field(
        min_length=1, max_length=253, description="The resource, e.g. limits.memory."
    )
    divisor: Quantity | None = Field(None, description="The unit of the value (default 1).")


class EnvVarSource(_Model):
    """Where an environment variable's value comes from: exactly one source."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            (
                "(has(self.secretKeyRef) ? 1 : 0) + (has(self.configMapKeyRef) ? 1 : 0)"
                " + (has(self.fieldRef) ? 1 : 0) + (has(self.resourceFieldRef) ? 1 : 0) == 1",
                "valueFrom takes exactly one of secretKeyRef, configMapKeyRef, fieldRef or "
                "resourceFieldRef",
            )
        )
    )

    secret_key_ref: KeyRef | None = Field(
        None, description="A key of a Secret in the resource's namespace."
    )
    config_map_key_ref: KeyRef | None = Field(
        None, description="A key of a ConfigMap in the resource's namespace."
    )
    field_ref: FieldRef | None = Field(None, description="A field of the worker's pod.")
    resource_field_ref: ResourceFieldRef | None = Field(
        None, description="A request or limit of the worker container."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [
            n
            for n in ("secret_key_ref", "config_map_key_ref", "field_ref", "resource_field_ref")
            if getattr(self, n) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "valueFrom takes exactly one of secretKeyRef, configMapKeyRef, fieldRef or "
                "resourceFieldRef"
            )
        return self


class EnvVar(_Model):
    """A container environment variable, as in a pod spec."""

    name: str = Field(min_length=1, max_length=MAX_PARAM_KEY, description="The variable's name.")
    value: str | None = Field(None, max_length=MAX_TEXT, description="Its value.")
    value_from: EnvVarSource | None = Field(
        None,
        description="Its source (secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef), "
        "as in a pod spec.",
    )


class Toleration(_Model):
    """A pod toleration, as in a pod spec."""

    key: str | None = Field(
        None, max_length=MAX_LABEL_KEY, description="The taint's key (none: every taint)."
    )
    operator: Literal["Exists", "Equal"] | None = Field(
        None, description="Exists, or Equal to value (default: Equal)."
    )
    value: str | None = Field(
        None, max_length=MAX_LABEL_VALUE, description="The taint's value, for Equal."
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="The taint effect tolerated (none: every effect)."
    )
    toleration_seconds: int | None = Field(
        None, strict=True, description="How long a NoExecute taint is tolerated."
    )


# -- affinity, as in a pod spec, typed so that every part of it has a limit -----------------

_Values = Annotated[
    list[Annotated[str, Field(max_length=MAX_LABEL_KEY)]], Field(max_length=MAX_LIST)
]


class NodeSelectorRequirement(_Model):
    key: str = Field(min_length=1, max_length=MAX_LABEL_KEY, description="A node label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"] = Field(
        description="How the label's value is compared."
    )
    values: _Values | None = Field(None, description="The values compared with.")


class NodeSelectorTerm(_Model):
    match_expressions: list[NodeSelectorRequirement] | None = Field(
        None, max_length=MAX_LIST, description="Requirements on node labels."
    )
    match_fields: list[NodeSelectorRequirement] | None = Field(
        None, max_length=MAX_LIST, description="Requirements on node fields."
    )


class NodeSelector(_Model):
    node_selector_terms: list[NodeSelectorTerm] = Field(
        min_length=1, max_length=MAX_LIST, description="Terms, any of which a node must meet."
    )


class PreferredSchedulingTerm(_Model):
    weight: int = Field(ge=1, le=100, strict=True, description="The preference's weight.")
    preference: NodeSelectorTerm = Field(description="The nodes preferred.")


class NodeAffinity(_Model):
    required_during_scheduling_ignored_during_execution: NodeSelector | None = Field(
        None, description="Nodes a worker must run on."
    )
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] | None = (
        Field(None, max_length=MAX_LIST, description="Nodes a worker prefers.")
    )


class LabelSelectorRequirement(_Model):
    key: str = Field(min_length=1, max_length=MAX_LABEL_KEY, description="A label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="How the label's value is compared."
    )
    values: _Values | None = Field(None, description="The values compared with.")


class LabelSelector(_Model):
    match_labels: _Labels | None = Field(
        None, max_length=MAX_LABELS, description="Labels to match exactly."
    )
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        None, max_length=MAX_LIST, description="Requirements on labels."
    )


class PodAffinityTerm(_Model):
    label_selector: LabelSelector | None = Field(None, description="The pods it refers to.")
    namespace_selector: LabelSelector | None = Field(
        None, description="The namespaces of those pods, by label."
    )
    namespaces: _Values | None = Field(None, description="Their namespaces, by name.")
    topology_key: str = Field(
        min_length=1, max_length=MAX_LABEL_KEY, description="The node label defining 'near'."
    )
    match_label_keys: _Values | None = Field(
        None, description="Label keys whose values the pods must share."
    )
    mismatch_label_keys: _Values | None = Field(
        None, description="Label keys whose values the pods must not share."
    )


class WeightedPodAffinityTerm(_Model):
    weight: int = Field(ge=1, le=100, strict=True, description="The preference's weight.")
    pod_affinity_term: PodAffinityTerm = Field(description="The term.")


class PodAffinity(_Model):
    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] | None = Field(
        None, max_length=MAX_LIST, description="Terms a worker must meet."
    )
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] | None = (
        Field(None, max_length=MAX_LIST, description="Terms a worker prefers.")
    )


class Affinity(_Model):
    """Scheduling constraints of the worker pods, as a pod spec's ``affinity``."""

    node_affinity: NodeAffinity | None = Field(None, description="Node affinity.")
    pod_affinity: PodAffinity | None = Field(None, description="Pod affinity.")
    pod_anti_affinity: PodAffinity | None = Field(None, description="Pod anti-affinity.")


def _affinity(value: dict[str, Any]) -> dict[str, Any]:
    # Checked by the model, kept as the plain dict a pod spec takes.
    return Affinity.model_validate(value).to_resource()


class _AffinityJsonSchema:
    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return handler(Affinity.__pydantic_core_schema__)


AffinityDict = Annotated[dict[str, Any], AfterValidator(_affinity), _AffinityJsonSchema]
"""A pod affinity as a plain dict, checked against :class:`Affinity`."""


class WorkerTemplate(_Model):
    """What every worker pod of the job gets."""

    image: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_IMAGE,
        description="The worker image (default: the controller's job default, else "
        f"{KUBEMR_IMAGE}).",
    )
    image_pull_policy: PullPolicy | None = Field(
        None, description="Always, IfNotPresent or Never (default: Kubernetes' own)."
    )
    command: list[Annotated[str, Field(max_length=MAX_TEXT)]] | None = Field(
        ["kubemr"],
        max_length=MAX_LIST,
        description="The worker's entry point, followed by kubemr's worker arguments "
        "(null: the image's ENTRYPOINT).",
    )
    resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements,
        description="Requests and limits of the worker container (default: none).",
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=MAX_ENV,
        description="Extra environment variables of the workers.",
    )
    node_selector: _Labels = Field(
        default_factory=dict,
        max_length=MAX_LABELS,
        description="Node labels worker pods must run on.",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=MAX_LIST, description="Taints worker pods tolerate."
    )
    affinity: AffinityDict | None = Field(None, description="Pod affinity rules, as in a pod spec.")
    priority_class_name: str | None = Field(
        None,
        max_length=253,
        pattern=_DNS_SUBDOMAIN,
        description="The worker pods' PriorityClass.",
    )
    labels: _Labels = Field(
        default_factory=dict,
        max_length=MAX_LABELS,
        description="Extra labels of the worker pods (kubemr's own labels always win).",
    )
    annotations: Annotated[
        _Annotations,
        AfterValidator(_no_forbidden_annotations),
    ] = Field(
        default_factory=dict,
        max_length=MAX_LABELS,
        description="Extra annotations of the worker pods (none that sets an AppArmor or "
        "seccomp profile).",
        json_schema_extra=_rules(_ANNOTATION_RULE),
    )
    service_account_name: str | None = Field(
        None,
        max_length=253,
        pattern=_DNS_SUBDOMAIN,
        description="The workers' service account (default: the namespace's default). "
        "Workers get no API token either way.",
    )


class MapReduceJobSpec(JobOptions):
    """A MapReduce job to run on Kubernetes."""

    # The shared settings, with the limits a resource stored in etcd needs.
    inputs: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=MAX_URL)]],
        Field(max_length=MAX_INPUTS),
        AfterValidator(_no_stdin),
    ] = Field(
        min_length=1,
        description=JobOptions.model_fields["inputs"].description,
        json_schema_extra=_rules(
            ("size(self) >= 1", "give at least one input: a URI, a directory or a glob"),
            (
                f"self.all(i, i != '{STDIN}')",
                "standard input (-i -) is read by kubemr run only: upload the data to "
                "storage and name it",
            ),
        ),
    )
    output: str = Field(
        min_length=1, max_length=MAX_URL, description=JobOptions.model_fields["output"].description
    )
    params: _Params = Field(
        default_factory=dict,
        max_length=MAX_PARAMS,
        description=JobOptions.model_fields["params"].description,
    )
    job: JobCode = Field(description="The job's code.")
    work_dir: str | None = Field(
        None,
        max_length=MAX_URL,
        description="Storage URL for the plan and shuffle data (default: "
        "s3://<output bucket>/_kubemr/<namespace>/<name>/<uid>, or beside a local output).",
    )
    storage: StorageSpec = Field(
        default_factory=StorageSpec, description="How workers reach object storage."
    )
    workers: WorkerRange = Field(
        default_factory=WorkerRange, description="Worker pods per wave, within min..max."
    )
    template: WorkerTemplate = Field(
        default_factory=WorkerTemplate, description="What every worker pod gets."
    )
    active_deadline_seconds: int | None = Field(
        None,
        ge=1,
        strict=True,
        description="Seconds the job may run, from its start, before it fails.",
    )
    pending_deadline_seconds: int | None = Field(
        DEFAULT_PENDING_DEADLINE_SECONDS,
        ge=1,
        strict=True,
        description="Seconds a wave may wait with no worker running before the job fails "
        "(pods that no node can take; null: wait forever).",
    )
    ttl_seconds_after_finished: int | None = Field(
        None,
        ge=0,
        strict=True,
        description="Seconds after the job finishes before the resource is deleted, with "
        "everything it owns (default: kept).",
    )
    suspend: bool = Field(
        False,
        description="Stop starting worker pods; running ones are stopped and their tasks "
        "rerun on resume.",
    )
    cancel: bool = Field(
        False,
        description="End the job for good: its running pods are stopped and it fails with "
        "reason Cancelled; its work dir is kept. Cannot be undone.",
    )

    def worker_image(self) -> str:
        return self.template.image or KUBEMR_IMAGE


class TemplateDefaults(_Model):
    """What a worker template gets from the installation when it leaves the field out."""

    image: str | None = Field(None, min_length=1, description="The worker image.")
    image_pull_policy: PullPolicy | None = Field(None, description="The image pull policy.")
    service_account_name: str | None = Field(
        None, max_length=253, pattern=_DNS_SUBDOMAIN, description="The workers' account."
    )
    resources: ResourceRequirements | None = Field(
        None, description="Requests and limits, for a template that sets neither."
    )
    node_selector: dict[str, str] | None = Field(
        None, description="Node labels, for a template that sets none."
    )
    tolerations: list[Toleration] | None = Field(
        None, description="Tolerations, for a template that sets none."
    )


class JobDefaults(_Model):
    """The installation's defaults for every MapReduceJob (``kubemr controller
    --job-defaults FILE``, the chart's ``jobDefaults``): each applies only where the
    resource leaves the field out, field by field. They name a Secret, never hold one."""

    storage: StorageSpec = Field(
        default_factory=StorageSpec, description="Storage endpoint, region and Secret name."
    )
    template: TemplateDefaults = Field(
        default_factory=TemplateDefaults, description="Worker pod defaults."
    )

    def apply(self, spec: MapReduceJobSpec) -> MapReduceJobSpec:
        """The spec with these defaults filled in where it has nothing of its own."""
        storage = spec.storage.model_copy(
            update={
                field: getattr(self.storage, field)
                for field in ("endpoint", "region", "secret_ref")
                if getattr(spec.storage, field) is None and getattr(self.storage, field) is not None
            }
        )
        mine, given = spec.template, self.template
        template: dict[str, Any] = {}
        for field in ("image", "image_pull_policy", "service_account_name"):
            if getattr(mine, field) is None and getattr(given, field) is not None:
                template[field] = getattr(given, field)
        if given.resources is not None and not (mine.resources.requests or mine.resources.limits):
            template["resources"] = given.resources
        if given.node_selector is not None and not mine.node_selector:
            template["node_selector"] = dict(given.node_selector)
        if given.tolerations is not None and not mine.tolerations:
            template["tolerations"] = list(given.tolerations)
        return spec.model_copy(
            update={"storage": storage, "template": mine.model_copy(update=template)}
        )


def default_work_dir(output: str, namespace: str, name: str, uid: str) -> str:
    """Where a resource's plan and shuffle data go when ``workDir`` is not given.

    In the output's bucket, apart from the output itself, and keyed by the resource's uid
    so that a resource created again under the same name never reads the old data.

    Example:
        >>> default_work_dir("s3://data/counts/2024", "team-a", "wc", "1f2e")
        's3://data/_kubemr/team-a/wc/1f2e'
        >>> default_work_dir("/shared/out", "team-a", "wc", "1f2e")
        '/shared/_kubemr/team-a/wc/1f2e'
    """
    match = re.match(r"^(s3://[^/]+)", output)
    base = match.group(1) if match else posixpath.dirname(output.rstrip("/")) or "."
    return posixpath.join(base, "_kubemr", namespace, name, uid)


# -- the MapReduceJob resource: status -------------------------------------------------------


class Condition(_Model):
    """A standard metav1.Condition, which kubectl wait --for=condition=TYPE reads."""

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        description="The condition's type (Complete, Failed, Suspended, Unschedulable, ...).",
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    observed_generation: int | None = Field(
        None, ge=0, strict=True, description="The spec generation the condition was set from."
    )
    last_transition_time: Timestamp = Field(description="When the status last changed.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="A CamelCase word for why.",
    )
    message: Annotated[str, _keep_head(MAX_CONDITION_MESSAGE)] = Field(
        max_length=MAX_CONDITION_MESSAGE, description="For people: what happened."
    )


class StepSummary(_Model):
    maps: int | None = Field(
        None, ge=0, strict=True, description="Map tasks (known once the step's splits are)."
    )
    reducers: int = Field(ge=0, strict=True, description="Reduce tasks (0: map-only).")


class PlanSummary(_Model):
    steps: list[StepSummary] = Field(
        default_factory=list, max_length=MAX_STEPS, description="Tasks of each step."
    )
    work_url: str | None = Field(
        None, max_length=MAX_URL, description="Where the plan and the shuffle data are."
    )


class WaveStatus(_Model):
    """One wave: a Kubernetes Job's counts, frozen when the wave ends."""

    kind: WaveKind = Field(description="plan, map, reduce or commit.")
    step: int | None = Field(None, ge=0, strict=True, description="Step of a map/reduce wave.")
    job_name: str = Field(max_length=63, description="The Kubernetes Job running the wave.")
    total: int = Field(0, ge=0, strict=True, description="Tasks in the wave.")
    succeeded: int = Field(0, ge=0, strict=True, description="Tasks committed.")
    failed: int = Field(0, ge=0, strict=True, description="Task attempts that failed.")
    start_time: Timestamp | None = Field(None, description="When the wave's Job started.")
    completion_time: Timestamp | None = Field(None, description="When the wave ended.")


class FailureStatus(_Model):
    """The root cause of a failed job."""

    reason: str = Field(
        max_length=128,
        description="Why, in a word: TaskFailed, BadInput, VersionSkew, DeadlineExceeded, "
        "PendingDeadlineExceeded, InvalidSpec, ...",
    )
    task: str | None = Field(None, max_length=128, description="The task, e.g. map-00012.")
    attempt: str | None = Field(None, max_length=253, description="The failed attempt (pod).")
    exit_code: int | None = Field(None, strict=True, description="The worker's exit code.")
    message: Annotated[str, _keep_head(MAX_FAILURE_MESSAGE)] = Field(
        "", max_length=MAX_FAILURE_MESSAGE, description="What went wrong."
    )
    traceback: Annotated[str, _keep_tail(MAX_TRACEBACK_BYTES)] | None = Field(
        None,
        max_length=MAX_TRACEBACK_BYTES,
        description=f"The traceback's last {MAX_TRACEBACK_BYTES} bytes.",
    )
    log: str | None = Field(
        None, max_length=MAX_URL, description="Storage URL of the failed attempt's full log."
    )


def _cap_counters(value: Any) -> Any:
    # The _SUCCESS summary keeps every counter; the status keeps a bounded first part.
    if not isinstance(value, dict):
        return value
    return {
        str(group)[:MAX_COUNTER_NAME]: (
            {str(k)[:MAX_COUNTER_NAME]: v for k, v in list(names.items())[:MAX_COUNTERS_PER_GROUP]}
            if isinstance(names, dict)
            else names
        )
        for group, names in list(value.items())[:MAX_COUNTER_GROUPS]
    }


class ResultSummary(_Model):
    """What a succeeded job read and wrote, from its ``_SUCCESS`` summary."""

    records_in: int = Field(0, ge=0, strict=True, description="Input records.")
    records_out: int = Field(0, ge=0, strict=True, description="Output records.")
    bytes_in: int = Field(0, ge=0, strict=True, description="Input bytes.")
    bytes_out: int = Field(0, ge=0, strict=True, description="Output bytes.")
    files_out: int = Field(0, ge=0, strict=True, description="Output files.")
    counters: Annotated[
        dict[str, Annotated[dict[str, int], Field(max_length=MAX_COUNTERS_PER_GROUP)]],
        Field(max_length=MAX_COUNTER_GROUPS),
        BeforeValidator(_cap_counters),
    ] = Field(
        default_factory=dict,
        description=f"The job's counters, group -> name -> value: the first "
        f"{MAX_COUNTER_GROUPS} groups of {MAX_COUNTERS_PER_GROUP} counters (all are in "
        "_SUCCESS).",
    )


class MapReduceJobStatus(_Model):
    """What the controller observed; bounded in size whatever the number of tasks."""

    observed_generation: int | None = Field(
        None, ge=0, strict=True, description="The spec generation this status describes."
    )
    phase: Phase | None = Field(None, description="Where the job is, for people and kubectl.")
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=MAX_CONDITIONS,
        description="Standard conditions, one per type (Complete, Failed, ...).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    wave: str | None = Field(None, max_length=64, description='The running wave: "reduce 1/2".')
    progress: str | None = Field(
        None, max_length=64, description='Tasks of the wave done / in it: "12/20".'
    )
    workers: int | None = Field(
        None, ge=0, strict=True, description="Worker pods the running wave asks for."
    )
    parallelism_reason: str | None = Field(
        None, max_length=256, description="Why the wave runs that many workers."
    )
    plan: PlanSummary | None = Field(None, description="The plan's shape, once planned.")
    waves: list[WaveStatus] = Field(
        default_factory=list,
        max_length=MAX_WAVES,
        description="Every wave started so far, in order.",
    )
    failure: FailureStatus | None = Field(None, description="Why the job failed.")
    result: ResultSummary | None = Field(None, description="What the job read and wrote.")
    start_time: Timestamp | None = Field(None, description="When the job started.")
    completion_time: Timestamp | None = Field(None, description="When the job finished.")


class MapReduceJob(_Model):
    """A whole ``MapReduceJob`` resource, as the API server returns it."""

    model_config = ConfigDict(extra="ignore")

    api_version: str = "kubemr.dev/v1alpha1"
    kind: str = "MapReduceJob"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: MapReduceJobSpec
    status: MapReduceJobStatus | None = None
