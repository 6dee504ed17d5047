"""Typer choices made from the Literals of :mod:`kubemr.spec`, where the values are
defined."""

from __future__ import annotations

from enum import StrEnum
from typing import get_args

from kubemr import spec


def choices(name: str, literal: object) -> type[StrEnum]:
    """A typer choice from a Literal of kubemr.spec."""
    return StrEnum(name, {value: value for value in get_args(literal)})  # type: ignore[return-value]


InputFormat = choices("InputFormat", spec.InputFormat)
OutputFormat = choices("OutputFormat", spec.OutputFormat)
PullPolicy = choices("PullPolicy", spec.PullPolicy)
