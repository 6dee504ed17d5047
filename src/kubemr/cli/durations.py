"""Durations as people write them (``90``, ``90s``, ``5m``, ``1h30m``, ``1.5h``, ``2d``)
and ages as kubectl shows them (``45s``, ``4m12s``, ``3h``)."""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str) -> float:
    """Seconds; raises ``ValueError`` naming the forms it takes."""
    value = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    parts = _PART.findall(value)
    if not value or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"invalid duration {text!r}: use e.g. 90s, 5m, 1h30m or 2h")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def whole_seconds(text: str) -> int:
    """A duration as the whole seconds a resource field takes (rounded up)."""
    return math.ceil(parse_duration(text))


def format_duration(seconds: float) -> str:
    """``1h02m03s``, ``4m05s``, ``12s``, ``0.4s``."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def format_age(seconds: float) -> str:
    """An age the way ``kubectl get`` prints one."""
    s = max(int(seconds), 0)
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    return f"{days // 365}y"
