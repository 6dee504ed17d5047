"""Tables as ``kubectl get`` prints them, for MapReduceJobs: the CRD's printer columns
(:data:`kubemr.crd.PRINTER_COLUMNS`), so ``kubemr list`` and ``kubectl get mrj`` agree."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from kubemr.cli.durations import format_age
from kubemr.crd import PRINTER_COLUMNS

Obj = dict[str, Any]
GAP = "   "


def render_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns three spaces apart; the last column is not padded."""
    rows = [list(r) for r in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers), *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + [row[-1]]
        lines.append(GAP.join(cells).rstrip())
    return "\n".join(lines) + "\n"


def parse_time(text: str | None) -> datetime | None:
    """A Kubernetes time (``2024-05-01T10:30:15Z``)."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def age(text: str | None, now: datetime) -> str:
    moment = parse_time(text)
    return format_age((now - moment).total_seconds()) if moment else ""


def lookup(obj: Any, json_path: str) -> Any:
    """The value at a simple JSONPath (``.status.failure.reason``), or None."""
    for part in json_path.strip(".").split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def columns(wide: bool) -> list[Obj]:
    return [c for c in PRINTER_COLUMNS if wide or not c.get("priority")]


def cell(resource: Obj, column: Obj, now: datetime) -> str:
    value = lookup(resource, column["jsonPath"])
    if value is None:
        return ""
    if column["type"] == "date":
        return age(str(value), now)
    return str(value)


def jobs_table(
    resources: Iterable[Obj], now: datetime, *, wide: bool = False, all_namespaces: bool = False
) -> str:
    """The MapReduceJobs as ``kubectl get mrj`` (``-o wide``, ``-A``) shows them."""
    shown = columns(wide)
    headers = (["NAMESPACE"] if all_namespaces else []) + ["NAME"]
    headers += [c["name"].upper() for c in shown]
    rows = []
    ordered = sorted(
        resources,
        key=lambda r: ((r.get("metadata") or {}).get("namespace") or "", _name(r)),
    )
    for resource in ordered:
        meta = resource.get("metadata") or {}
        row = [str(meta.get("namespace") or "")] if all_namespaces else []
        row.append(_name(resource))
        row += [cell(resource, c, now) for c in shown]
        rows.append(row)
    return render_table(headers, rows)


def _name(resource: Obj) -> str:
    return str((resource.get("metadata") or {}).get("name") or "")
