"""What a job used, and what it cost under a price table.

The quantities come from the report's ``totals`` (and, on Kubernetes, the worker pods'
requests). A price table turns them into money:

    {"vcpu_hour": 0.04, "gib_hour": 0.005, "per_1000_requests": 0.005,
     "per_gb_transferred": 0.01, "currency": "USD"}

given as JSON or TOML. On Kubernetes CPU and memory are billed by what the pods requested
for as long as they ran (that is what a node reserves); on one machine, by what the
attempts used.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from dataclasses import dataclass
from typing import Any

from kubemr.errors import KubemrError

GIB = 1024**3
GB = 1000**3
PRICE_KEYS = {
    "vcpu_hour": "per vCPU-hour",
    "gib_hour": "per GiB-hour of memory",
    "per_1000_requests": "per 1,000 storage requests",
    "per_gb_transferred": "per GB (10^9 bytes) read or written",
}
CURRENCY = "currency"


class PriceTableError(KubemrError):
    """A price table that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Prices:
    vcpu_hour: float
    gib_hour: float
    per_1000_requests: float
    per_gb_transferred: float
    currency: str = "USD"


def parse_prices(data: Any, source: str) -> Prices:
    """A price table from its parsed JSON or TOML; every price is required (0 for an item
    that is free), ``currency`` is optional."""
    if not isinstance(data, dict):
        raise PriceTableError(f"{source}: a price table is a table of keys, not {data!r}")
    known = ", ".join([*PRICE_KEYS, CURRENCY])
    for key in data:
        if key not in PRICE_KEYS and key != CURRENCY:
            raise PriceTableError(f"{source}: unknown key {key!r}; the keys are {known}")
    values: dict[str, Any] = {}
    for key, meaning in PRICE_KEYS.items():
        if key not in data:
            raise PriceTableError(
                f"{source}: {key!r} ({meaning}) is missing; give 0 for an item that is free"
            )
        value = data[key]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            raise PriceTableError(
                f"{source}: {key!r} is {value!r}; give a price {meaning} as a number >= 0"
            )
        values[key] = float(value)
    currency = data.get(CURRENCY, "USD")
    if not isinstance(currency, str) or not currency.strip() or len(currency) > 8:
        raise PriceTableError(
            f"{source}: {CURRENCY!r} is {currency!r}; give a short name such as USD or EUR"
        )
    return Prices(**values, currency=currency.strip())


def load_prices(path: str) -> Prices:
    """Read a price table: ``.toml`` as TOML, anything else as JSON."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise PriceTableError(f"price table {path}: {exc.strerror or exc}") from None
    is_toml = os.path.splitext(path)[1].lower() == ".toml"
    try:
        data = tomllib.loads(raw.decode()) if is_toml else json.loads(raw)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        kind = "TOML" if is_toml else "JSON (a .toml file is read as TOML)"
        raise PriceTableError(f"price table {path}: not valid {kind}: {exc}") from None
    return parse_prices(data, f"price table {path}")


@dataclass(frozen=True)
class CostLine:
    item: str
    quantity: float
    unit: str
    note: str
    """Which quantity is billed, or why a line is not."""
    price: float | None = None
    price_unit: str = ""
    amount: float | None = None
    """Money, with a price table; None for a line that is not billed."""


@dataclass(frozen=True)
class Cost:
    lines: list[CostLine]
    currency: str | None
    total: float | None
    cpu_use: float | None
    """CPU used over CPU requested (Kubernetes); None elsewhere."""
    memory_use: float | None
    """Peak memory x time over requested memory x time (Kubernetes); None elsewhere."""


def _number(totals: dict[str, Any], key: str) -> float | None:
    value = totals.get(key)
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def job_cost(report: dict[str, Any], prices: Prices | None = None) -> Cost:
    """The job's use, line by line; with ``prices``, the money of each billed line and
    the total."""
    totals = report.get("totals") or {}
    workers = report.get("workers") or {}
    kube = report.get("runner") == "kubernetes"
    cpu = _number(totals, "cpu_seconds") or 0.0
    memory = _number(totals, "memory_gib_seconds") or 0.0
    worker_seconds = _number(totals, "worker_seconds") or 0.0
    requested_cpu = _number(totals, "requested_cpu_seconds")
    mem_request = _number(workers, "memory_request_bytes")
    requested_memory = worker_seconds * mem_request / GIB if kube and mem_request else None
    requests = _number(totals, "storage_requests") or 0.0
    moved = (_number(totals, "bytes_read") or 0.0) + (_number(totals, "bytes_written") or 0.0)

    def bill(quantity: float, per: float, price: float | None) -> float | None:
        return None if price is None else quantity / per * price

    p = prices

    def price(name: str) -> float | None:
        return None if p is None else float(getattr(p, name))

    lines = [
        CostLine(
            item="worker time",
            quantity=worker_seconds,
            unit="pod-s" if kube else "s",
            note="sum of attempt durations" + (" (pod-seconds)" if kube else ""),
        )
    ]
    cpu_billed = kube and requested_cpu is not None
    lines.append(
        CostLine(
            item="CPU used",
            quantity=cpu,
            unit="CPU-s",
            note="user + system time of the attempts"
            + ("" if not cpu_billed else "; billed by request below"),
            price=None if cpu_billed or p is None else p.vcpu_hour,
            price_unit="" if cpu_billed else "vCPU-h",
            amount=None if cpu_billed else bill(cpu, 3600, price("vcpu_hour")),
        )
    )
    if cpu_billed:
        assert requested_cpu is not None
        lines.append(
            CostLine(
                item="CPU requested",
                quantity=requested_cpu,
                unit="vCPU-s",
                note="pod-seconds x the pods' CPU request",
                price=price("vcpu_hour"),
                price_unit="vCPU-h",
                amount=bill(requested_cpu, 3600, price("vcpu_hour")),
            )
        )
    memory_billed = requested_memory is not None
    lines.append(
        CostLine(
            item="memory used",
            quantity=memory,
            unit="GiB-s",
            note="peak resident memory x duration of each attempt"
            + ("; billed by request below" if memory_billed else ""),
            price=None if memory_billed or p is None else p.gib_hour,
            price_unit="" if memory_billed else "GiB-h",
            amount=None if memory_billed else bill(memory, 3600, price("gib_hour")),
        )
    )
    if memory_billed:
        assert requested_memory is not None
        lines.append(
            CostLine(
                item="memory requested",
                quantity=requested_memory,
                unit="GiB-s",
                note="pod-seconds x the pods' memory request",
                price=price("gib_hour"),
                price_unit="GiB-h",
                amount=bill(requested_memory, 3600, price("gib_hour")),
            )
        )
    lines.append(
        CostLine(
            item="storage requests",
            quantity=requests,
            unit="requests",
            note="GET, PUT, LIST... to the job's storage",
            price=price("per_1000_requests"),
            price_unit="1,000 requests",
            amount=bill(requests, 1000, price("per_1000_requests")),
        )
    )
    lines.append(
        CostLine(
            item="bytes transferred",
            quantity=moved,
            unit="B",
            note="read + written by the attempts",
            price=price("per_gb_transferred"),
            price_unit="GB",
            amount=bill(moved, GB, price("per_gb_transferred")),
        )
    )
    total = None
    if p is not None:
        total = sum(line.amount for line in lines if line.amount is not None)
    return Cost(
        lines=lines,
        currency=p.currency if p else None,
        total=total,
        cpu_use=cpu / requested_cpu if cpu_billed and requested_cpu else None,
        memory_use=memory / requested_memory if requested_memory else None,
    )


def format_money(amount: float, currency: str) -> str:
    """``12.34 USD``; an amount under 1 keeps 3 significant digits (``0.000412 USD``)."""
    if amount == 0:
        return f"0 {currency}"
    if abs(amount) >= 1:
        return f"{amount:,.2f} {currency}"
    digits = max(2, 2 - math.floor(math.log10(abs(amount))))
    return f"{amount:.{digits}f} {currency}"
