"""``-o`` formats: what a command prints on stdout for people and for programs."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

import yaml


class Format(StrEnum):
    """``kubemr status``, ``kubemr list``."""

    table = "table"
    wide = "wide"
    json = "json"
    yaml = "yaml"
    name = "name"


class ResourceFormat(StrEnum):
    """``kubemr submit``: the name, or the whole resource."""

    name = "name"
    json = "json"
    yaml = "yaml"


class _Dumper(yaml.SafeDumper):
    """Writes a text of several lines as a literal block (``|``), as people write YAML:
    an inline job's source stays readable and diffs well."""


def _text(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _text)


def dump(data: Any, fmt: str) -> str:
    """``data`` as JSON or YAML text ending in a newline."""
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if fmt == "yaml":
        return yaml.dump(
            data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True
        )
    raise ValueError(f"not a data format: {fmt}")


def name_of(resource: dict[str, Any]) -> str:
    return str((resource.get("metadata") or {}).get("name") or "")
