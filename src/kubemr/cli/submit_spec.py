"""``kubemr submit``'s flags as a ``MapReduceJobSpec``: pure, no I/O.

The settings, their defaults and limits are the models' (:mod:`kubemr.spec`); this module
only says which flag sets which field, so that a value the models refuse is reported with
the flag that gave it.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from kubemr.cli.durations import whole_seconds
from kubemr.errors import OptionError
from kubemr.spec import MapReduceJobSpec

JOB_PLACEHOLDER = {"module": "job.placeholder:Job"}
"""Stands in for the job's code while the flags alone are checked."""

FLAGS: dict[tuple[str, ...], str] = {
    ("inputs",): "--input",
    ("output",): "--output",
    ("input_format",): "--format",
    ("output_format",): "--output-format",
    ("encoding",): "--encoding",
    ("decode_errors",): "--decode-errors",
    ("reducers",): "--reducers",
    ("split_size",): "--split-size",
    ("memory",): "--memory",
    ("max_attempts",): "--max-attempts",
    ("skip_bad_records",): "--skip-bad-records",
    ("params",): "--param",
    ("overwrite",): "--overwrite",
    ("job",): "JOB",
    ("job", "source"): "JOB (--code source)",
    ("job", "module"): "JOB",
    ("job", "files"): "--file",
    ("work_dir",): "--work-dir",
    ("storage", "endpoint"): "--s3-endpoint",
    ("storage", "region"): "--s3-region",
    ("storage", "secret_ref"): "--storage-secret",
    ("storage", "secret_ref", "name"): "--storage-secret",
    ("workers",): "--workers-min/--workers-max",
    ("workers", "min"): "--workers-min",
    ("workers", "max"): "--workers-max",
    ("workers", "max_pending"): "--workers-max-pending",
    ("template", "image"): "--image",
    ("template", "image_pull_policy"): "--image-pull-policy",
    ("template", "command"): "--worker-command",
    ("template", "env"): "--env",
    ("template", "resources", "requests"): "--request",
    ("template", "resources", "limits"): "--limit",
    ("template", "service_account_name"): "--service-account",
    ("active_deadline_seconds",): "--active-deadline",
    ("pending_deadline_seconds",): "--pending-deadline",
    ("ttl_seconds_after_finished",): "--ttl-after-finished",
}
"""The flag that sets each spec field (Python names, as the models report them)."""


class FlagError(OptionError):
    """A flag's value that the job's spec cannot take."""


@dataclass
class SubmitFlags:
    """The flags of ``kubemr submit`` that become the spec, as given (None: not given)."""

    inputs: list[str]
    output: str
    reducers: int | None = None
    split_size: str | None = None
    memory: str | None = None
    input_format: str | None = None
    output_format: str | None = None
    encoding: str | None = None
    decode_errors: str | None = None
    max_attempts: int | None = None
    skip_bad_records: int | None = None
    overwrite: bool = False
    params: list[str] = field(default_factory=list)
    work_dir: str | None = None
    s3_endpoint: str | None = None
    s3_region: str | None = None
    storage_secret: str | None = None
    workers_min: int | None = None
    workers_max: int | None = None
    workers_max_pending: int | None = None
    image: str | None = None
    image_pull_policy: str | None = None
    worker_command: str | None = None
    env: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    limits: list[str] = field(default_factory=list)
    service_account: str | None = None
    active_deadline: str | None = None
    pending_deadline: str | None = None
    ttl_after_finished: str | None = None


def key_values(items: list[str], flag: str) -> dict[str, str]:
    """``KEY=VALUE`` items as a dict; a one-line error naming the flag otherwise."""
    found: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise FlagError(f"{flag} {item!r}: give KEY=VALUE")
        found[key.strip()] = value
    return found


def _seconds(text: str | None, flag: str) -> int | None:
    if text is None:
        return None
    try:
        return whole_seconds(text)
    except ValueError as exc:
        raise FlagError(f"{flag}: {exc}") from None


def spec_values(flags: SubmitFlags, job: dict[str, Any]) -> dict[str, Any]:
    """The spec's fields that the flags give (Python names), nested as the models nest."""
    values: dict[str, Any] = {"inputs": list(flags.inputs), "output": flags.output, "job": job}
    plain = {
        "input_format": flags.input_format,
        "output_format": flags.output_format,
        "encoding": flags.encoding,
        "decode_errors": flags.decode_errors,
        "reducers": flags.reducers,
        "split_size": flags.split_size,
        "memory": flags.memory,
        "max_attempts": flags.max_attempts,
        "skip_bad_records": flags.skip_bad_records,
        "work_dir": flags.work_dir,
        "active_deadline_seconds": _seconds(flags.active_deadline, "--active-deadline"),
        "pending_deadline_seconds": _seconds(flags.pending_deadline, "--pending-deadline"),
        "ttl_seconds_after_finished": _seconds(flags.ttl_after_finished, "--ttl-after-finished"),
    }
    values.update({k: v for k, v in plain.items() if v is not None})
    if flags.overwrite:
        values["overwrite"] = True
    if flags.params:
        values["params"] = key_values(flags.params, "--param")
    storage = {
        "endpoint": flags.s3_endpoint,
        "region": flags.s3_region,
        "secret_ref": {"name": flags.storage_secret} if flags.storage_secret is not None else None,
    }
    workers = {
        "min": flags.workers_min,
        "max": flags.workers_max,
        "max_pending": flags.workers_max_pending,
    }
    template: dict[str, Any] = {
        "image": flags.image,
        "image_pull_policy": flags.image_pull_policy,
        "service_account_name": flags.service_account,
    }
    if flags.worker_command is not None:
        try:
            command = shlex.split(flags.worker_command)
        except ValueError as exc:
            raise FlagError(f"--worker-command {flags.worker_command!r}: {exc}") from None
        if not command:
            raise FlagError("--worker-command: give the worker's entry point, e.g. 'kubemr'")
        template["command"] = command
    if flags.env:
        template["env"] = [
            {"name": k, "value": v} for k, v in key_values(flags.env, "--env").items()
        ]
    resources = {
        "requests": key_values(flags.requests, "--request") if flags.requests else None,
        "limits": key_values(flags.limits, "--limit") if flags.limits else None,
    }
    template["resources"] = _given(resources)
    for name, group in (("storage", storage), ("workers", workers), ("template", template)):
        given = _given(group)
        if given:
            values[name] = given
    return values


def _given(group: dict[str, Any]) -> dict[str, Any] | None:
    given = {k: v for k, v in group.items() if v is not None}
    return given or None


def check_spec(values: dict[str, Any]) -> MapReduceJobSpec:
    """The spec, or a :class:`FlagError` naming the flag whose value it refuses."""
    try:
        return MapReduceJobSpec(**values)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(str(p) for p in error["loc"])
        flag, depth = flag_for(loc)
        message = str(error["msg"]).removeprefix("Value error, ")
        message = message[:1].lower() + message[1:]
        given = _at(values, loc)
        shown = given if given is not None else error.get("input")
        value = f" {_short(shown)}" if isinstance(shown, str | int | float) else ""
        if value and len(loc) == depth + 1 and not loc[-1].isdigit():
            key = loc[-1] if len(loc[-1]) <= SHOWN_CHARS else _short(loc[-1])
            value = f" {key}={_short(shown)}"  # a KEY=VALUE flag: name the key
        raise FlagError(f"{flag}{value}: {message}") from None


SHOWN_CHARS = 60
"""How much of a refused value an error quotes: enough to recognise it, never pages."""


def _short(value: object) -> str:
    text = repr(value)
    if len(text) <= SHOWN_CHARS:
        return text
    return f"{text[: SHOWN_CHARS - 1]}… ({len(str(value))} characters)"


def flag_for(loc: tuple[str, ...]) -> tuple[str, int]:
    """The flag of the longest known prefix of a spec field's location, and its length."""
    for end in range(len(loc), 0, -1):
        flag = FLAGS.get(loc[:end])
        if flag:
            return flag, end
    return ".".join(loc) or "the job's settings", len(loc)


def _at(values: Any, loc: tuple[str, ...]) -> Any:
    """The value given at a location, as given (``1k``, not the 1000 bytes it means)."""
    for part in loc:
        if isinstance(values, dict):
            values = values.get(part)
        elif isinstance(values, list) and part.isdigit() and int(part) < len(values):
            values = values[int(part)]
        else:
            return None
    return values
