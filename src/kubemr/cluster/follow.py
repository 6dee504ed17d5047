"""Follow one MapReduceJob as it changes: a watch from the resourceVersion last seen,
with a bounded poll as the fallback.

The watch asks the server to end it after at most ``tick`` seconds and bounds every read,
so a silent connection cannot hang the caller; it resumes from the last resourceVersion
(bookmarks included) and reads the resource again on 410 Gone. When watching fails (no
``watch`` right, a proxy that cuts streams, the API server restarting), the resource is
read every ``poll`` seconds instead, and a watch is tried again a minute later. Failures
to reach the server are tolerated for ``patience`` seconds in a row.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

from kubemr.cluster.client import JobsClient
from kubemr.cluster.errors import ApiRefused, Forbidden, JobDeleted, NotFound, Unreachable

Obj = dict[str, Any]

TICK = 30.0
POLL = 5.0
PATIENCE = 60.0
RETRY_WATCH = 60.0


class _Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): read the resource again."""


def follow(
    jobs: JobsClient,
    namespace: str,
    name: str,
    *,
    tick: float = TICK,
    until: float | None = None,
    poll: float = POLL,
    patience: float = PATIENCE,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Obj | None]:
    """Yield the resource now, then every new version of it, and None whenever ``tick``
    seconds (or what is left until ``until``, a ``clock()`` time) pass without one.

    Raises :class:`JobDeleted` when the resource goes away, and the client's errors when
    it may not be read at all or the server stays unreachable for ``patience`` seconds.
    """
    obj = jobs.get(namespace, name)
    yield obj
    version = _version(obj)
    watching = True
    watch_again_at = 0.0
    failing_since: float | None = None

    def wait_for() -> float:
        left = tick if until is None else min(tick, until - clock())
        return max(left, 0.0)

    while True:
        if not watching and clock() >= watch_again_at:
            watching = True
        try:
            if watching:
                changed = False
                try:
                    timeout = max(1, math.ceil(wait_for()))
                    for event in jobs.watch(namespace, name, version, timeout):
                        new = _event(event, name)
                        if new is None:  # a bookmark
                            version = _version(event.get("object") or {}) or version
                            continue
                        version = _version(new) or version
                        changed = True
                        yield new
                except _Expired:
                    obj = jobs.get(namespace, name)
                    version = _version(obj)
                    changed = True
                    yield obj
                failing_since = None
                if not changed:
                    yield None
            else:
                sleep(min(poll, max(wait_for(), 0.1)))
                obj = jobs.get(namespace, name)
                failing_since = None
                if _version(obj) != version:
                    version = _version(obj)
                    yield obj
                else:
                    yield None
        except NotFound:
            raise JobDeleted(f"{name} was deleted before it finished") from None
        except Forbidden as exc:
            if exc.verb != "watch":
                raise
            watching, watch_again_at = False, math.inf  # no right to watch: poll for good
        except ApiRefused as exc:
            if exc.status == 410:
                obj = jobs.get(namespace, name)
                version = _version(obj)
                yield obj
                continue
            failing_since = _still_patient(failing_since, patience, clock, exc)
            watching, watch_again_at = False, clock() + RETRY_WATCH
        except Unreachable as exc:
            failing_since = _still_patient(failing_since, patience, clock, exc)
            if watching:
                watching, watch_again_at = False, clock() + RETRY_WATCH
            else:
                sleep(min(poll, max(wait_for(), 0.1)))


def _event(event: Obj, name: str) -> Obj | None:
    kind = event.get("type")
    obj = event.get("object") or {}
    if kind == "BOOKMARK":
        return None
    if kind == "ERROR":
        if obj.get("code") == 410:
            raise _Expired()
        raise Unreachable(f"the watch of {name} failed: {obj.get('message') or obj}")
    if kind == "DELETED":
        raise JobDeleted(f"{name} was deleted before it finished")
    return obj


def _still_patient(
    since: float | None, patience: float, clock: Callable[[], float], exc: Exception
) -> float:
    now = clock()
    if since is not None and now - since > patience:
        raise exc
    return now if since is None else since


def _version(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")
