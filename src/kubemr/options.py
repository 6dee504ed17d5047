"""Typed job options: a job's ``Options`` model, read from the job's parameters.

A job declares its options as a pydantic model nested in its class::

    class TopWords(kubemr.MapReduce):
        class Options(kubemr.options.Options):
            pattern: str = Field(description="Regular expression of a word.")
            top: int = Field(10, ge=1, description="How many words to keep.")
            stopwords: kubemr.options.File = Field("stopwords.txt", description="Left out.")

Values travel as the job's parameters, strings (``--param top=5``, ``spec.params``), so
the plan, the resource and the controller never need the job's code to carry them; the
plan stage (``kubemr run``'s driver, or the plan pod) and ``kubemr submit`` validate them
against the model before any task starts, and every task reads the typed values as
``self.options``. Pure: no I/O.
"""

from __future__ import annotations

import datetime
import enum
import json
import os
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from kubemr.errors import JobDefinitionError, OptionError

RESERVED_PREFIX = "kubemr."
"""Parameters whose names start with this are kubemr's own (the shipped files' manifest)."""


class JobOptionError(OptionError, JobDefinitionError):
    """A job option's value the job's ``Options`` refuses: found before any task starts.
    A :class:`JobDefinitionError` to a plan pod, so it is not retried."""


class Options(BaseModel):
    """Base of a job's ``Options``: a pydantic model whose fields are the job's options.

    Unknown options are refused (a typo would otherwise be ignored), and the values are
    read-only: every task and hook sees the same ones. Give a subclass
    ``model_config = ConfigDict(extra="allow")`` to take parameters it does not declare
    (they are in ``self.params`` either way).
    """

    # defer_build: the validator is built when options are first checked, not at import.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class _FileMarker:
    def __repr__(self) -> str:
        return "kubemr.options.File"

    def __reduce__(self) -> str:
        return "FILE_MARKER"  # pickles as the module's one marker


FILE_MARKER = _FileMarker()
File = Annotated[str, FILE_MARKER]
"""An option whose value is a local file shipped with the job: given as a path (relative
to the current directory; a default is relative to the job file), read in every task as
the file's local path."""


def options_model(job_cls: type) -> type[BaseModel] | None:
    """The job's ``Options`` model, or None for a job that declares none."""
    model = getattr(job_cls, "Options", None)
    if model is None:
        return None
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise JobDefinitionError(
            f"{job_cls.__name__}.Options must be a class deriving from kubemr.options.Options (a "
            f"pydantic model), not {model!r}"
        )
    return model


def check_options(job_cls: type, params: Mapping[str, str]) -> BaseModel:
    """The job's options from its parameters; a :class:`JobOptionError` naming every
    option that is missing, unknown or invalid, and what it expects."""
    for key in params:
        if key.startswith(RESERVED_PREFIX):
            raise JobOptionError(
                f"parameter {key!r}: names starting with {RESERVED_PREFIX!r} are kubemr's own"
            )
    model = options_model(job_cls)
    if model is None:
        return Options()
    data: dict[str, Any] = {}
    for key, text in params.items():
        info = model.model_fields.get(key)
        data[key] = _structured(text) if info is not None and _is_collection(info) else text
    try:
        # Lax validation reads numbers, booleans ("true", "yes", "1") and dates from text.
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [_problem(job_cls.__name__, model, err) for err in exc.errors()]
        raise JobOptionError("; ".join(problems)) from None


def _problem(job: str, model: type[BaseModel], err: Any) -> str:
    loc = err.get("loc") or ()
    name = str(loc[0]) if loc else "options"
    info = model.model_fields.get(name)
    if err["type"] == "missing":
        return (
            f"option {name} of {job} is required: give --param {name}={type_name(info).upper()}"
            + _about(info)
        )
    if err["type"] == "extra_forbidden":
        known = ", ".join(model.model_fields) or "none"
        return (
            f"{job} has no option {name!r} (its options: {known}; `--help` after the job "
            "lists them)"
        )
    msg = str(err["msg"]).removeprefix("Value error, ")
    msg = msg[:1].lower() + msg[1:]
    if not loc:
        return f"invalid options of {job}: {msg}"
    where = ".".join(str(p) for p in loc)
    return f"invalid option {where}={_shown(err.get('input'))} of {job}: {msg}" + _about(info)


def _about(info: FieldInfo | None) -> str:
    if info is None:
        return ""
    text = f" ({type_name(info)}"
    if info.description:
        text += f": {info.description.rstrip('.')}"
    return text + ")"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def _structured(text: str) -> Any:
    """A list or mapping option's value: JSON (``["a","b"]``), or items separated by
    commas (``a,b``)."""
    stripped = text.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return json.loads(stripped)
        except ValueError:
            return text  # the model says what it expects
    return [item.strip() for item in text.split(",")] if stripped else []


def _is_collection(info: FieldInfo) -> bool:
    return any(
        typing.get_origin(t) in (list, tuple, set, frozenset, dict) or t in (list, tuple, set, dict)
        for t in _branches(info.annotation)
    )


def _branches(annotation: Any) -> list[Any]:
    """The types of an annotation, its Optional / union branches apart."""
    if typing.get_origin(annotation) is Annotated:
        return _branches(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        out: list[Any] = []
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                out.extend(_branches(arg))
        return out
    return [annotation]


def is_file_field(info: FieldInfo) -> bool:
    """Whether an option is a :data:`File`, or an optional one."""
    if any(isinstance(m, _FileMarker) for m in info.metadata):
        return True
    return any(_marked(arg) for arg in _union_args(info.annotation))


def _union_args(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _marked(annotation: Any) -> bool:
    return typing.get_origin(annotation) is Annotated and any(
        isinstance(m, _FileMarker) for m in annotation.__metadata__
    )


def file_fields(model: type[BaseModel] | None) -> list[str]:
    return [n for n, info in (model.model_fields if model else {}).items() if is_file_field(info)]


def split_file_ref(text: str) -> tuple[str, str]:
    """``PATH`` or ``PATH#NAME``: the path and the name tasks read the file by."""
    path, sep, name = text.rpartition("#")
    if not sep:
        path = text
    return path, (name if sep else os.path.basename(path.rstrip("/")))


def type_name(info: FieldInfo | None) -> str:
    """How help and errors name an option's type: ``integer``, ``a|b``, ``file``."""
    if info is None:
        return "text"
    if is_file_field(info):
        return "file"
    names = [_type_name(t) for t in _branches(info.annotation)]
    return " or ".join(dict.fromkeys(names))


def _type_name(t: Any) -> str:
    if typing.get_origin(t) is Literal:
        return "|".join(str(a) for a in typing.get_args(t))
    if isinstance(t, type) and issubclass(t, enum.Enum):
        return "|".join(str(m.value) for m in t)
    origin = typing.get_origin(t)
    if origin in (list, tuple, set, frozenset) or t in (list, tuple, set):
        args = [a for a in typing.get_args(t) if a is not Ellipsis]
        inner = _type_name(args[0]) if args else "text"
        return f"list of {inner} (a,b or JSON)"
    if origin is dict or t is dict:
        return "JSON object"
    simple = {
        str: "text",
        int: "integer",
        float: "number",
        bool: "true|false",
        datetime.date: "date",
        datetime.datetime: "date-time",
    }
    if t in simple:
        return simple[t]
    return getattr(t, "__name__", None) or str(t)


def default_text(info: FieldInfo) -> str | None:
    """An option's default as help shows it, or None when it is required."""
    if info.is_required():
        return None
    if info.default_factory is not None:
        return "(computed)"
    value = info.default
    if value is PydanticUndefined:
        return None
    return param_text(value)


def param_text(value: Any) -> str:
    """A value as a job parameter (a string): what ``kubemr.run(params=...)`` and
    ``kubemr submit`` write for a Python value."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return param_text(value.value)
    if isinstance(value, list | tuple | set | frozenset | dict):
        return json.dumps(sorted(value) if isinstance(value, set | frozenset) else value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    return str(value)


def help_text(job_cls: type) -> str:
    """What ``--help`` after a job adds: its options, and the files it ships."""
    model = options_model(job_cls)
    name = job_cls.__name__
    lines: list[str] = []
    if model is not None and model.model_fields:
        lines.append(f"Options of {name} (give each as --param NAME=VALUE):")
        rows = []
        for field, info in model.model_fields.items():
            kind = type_name(info)
            plain = " " not in kind  # INTEGER, TEXT, A|B; longer ones are spelled out
            default = default_text(info)
            right = "required." if default is None else f"default: {default}."
            if info.description:
                right += f" {info.description}"
            if not plain:
                right += f" ({kind})"
            rows.append((f"  --param {field}={kind.upper() if plain else 'VALUE'}", right))
        width = max(len(left) for left, _ in rows) + 2
        lines.extend(f"{left.ljust(width)}{right}" for left, right in rows)
    else:
        lines.append(
            f"{name} declares no typed options (class Options(kubemr.options.Options)); its "
            "parameters, if any, are read as self.params[NAME] (--param NAME=VALUE)."
        )
    shipped = getattr(job_cls, "FILES", ()) or ()
    if shipped:
        shipped = [shipped] if isinstance(shipped, str) else shipped
        names = ", ".join(split_file_ref(str(f))[1] for f in shipped)
        lines.append(f"Files shipped with {name} (FILES, read as self.files[NAME]): {names}")
    return "\n".join(lines)
