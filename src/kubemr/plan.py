"""Planning, pure: input files -> splits; the plan every task reads.

Nothing here does I/O. The runner (or the controller) lists the inputs, calls
:func:`make_splits`, and stores the :class:`Plan` as JSON in the job's work dir, never
inside a Kubernetes object (etcd objects are capped near 1.5 MB).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from kubemr.errors import VersionSkew
from kubemr.formats import (
    DECODED_FORMATS,
    DEFAULT_CHUNK_BYTES,
    INTERNAL,
    RAW,
    STRICT,
    UTF8,
    Split,
    reads_whole_files,
)
from kubemr.storage import ObjectInfo, join

MIN_AUTO_SPLIT = 4 << 20
STAGING = "_temporary"
"""Where, under the output directory, tasks write the parts the owning run publishes."""


def effective_split_size(
    total_bytes: int, split_size: int, workers: int, auto: bool, *, costly_tasks: bool = False
) -> int:
    """The split size to use.

    With the default (``auto``), the number of splits is a multiple of the worker count,
    so the last round of map tasks keeps every worker busy; small inputs get one split
    per worker. It is rounded up where a task costs little to start (a process of a
    local pool), and down where each costs a second or two (a pod: its scheduling,
    process start and the Job controller's bookkeeping), giving fewer, larger tasks.
    """
    if split_size <= 0:
        return 0
    if not auto or workers <= 1 or total_bytes == 0:
        return split_size
    count = max(1, math.ceil(total_bytes / split_size))
    rounds = count // workers if costly_tasks else math.ceil(count / workers)
    count = max(1, rounds) * workers
    return max(math.ceil(total_bytes / count), MIN_AUTO_SPLIT)


def make_splits(
    files: list[ObjectInfo],
    split_size: int,
    fmt: str,
    compression_of: Any,
    headers: dict[str, list[str]] | None = None,
    *,
    encoding: str = UTF8,
    decode_errors: str = STRICT,
    with_offset: bool = False,
) -> list[Split]:
    """Cut files into splits of about ``split_size`` bytes (0: one split per file).

    Empty files produce no split, except in the ``raw`` format, which gives every file
    whole, as it is (not decompressed). Compressed files, and files in UTF-16 or UTF-32,
    are one split each. ``encoding``, ``decode_errors`` and ``with_offset`` say how the
    text formats are read (see :mod:`kubemr.formats`).
    """
    if fmt == RAW:
        return [Split(f.url, 0, f.size, f.size, RAW) for f in files]
    reading: dict[str, Any] = {}
    whole_files = False
    if fmt in DECODED_FORMATS:
        reading = {"encoding": encoding, "decode_errors": decode_errors}
        whole_files = reads_whole_files(encoding)
    if with_offset:
        reading["with_offset"] = True
    splits: list[Split] = []
    for info in files:
        if info.size == 0:
            continue
        compression = compression_of(info.url)
        header = (headers or {}).get(info.url)
        if compression or whole_files or split_size <= 0 or info.size <= split_size:
            splits.append(
                Split(info.url, 0, info.size, info.size, fmt, compression, header, **reading)
            )
            continue
        count = math.ceil(info.size / split_size)
        step = math.ceil(info.size / count)
        for start in range(0, info.size, step):
            end = min(start + step, info.size)
            splits.append(Split(info.url, start, end, info.size, fmt, None, header, **reading))
    return splits


def internal_splits(outputs: list[ObjectInfo]) -> list[Split]:
    """Splits over a previous step's outputs (kubemr's block format, never cut)."""
    return [Split(o.url, 0, o.size, o.size, INTERNAL) for o in outputs if o.size > 0]


@dataclass
class StepPlan:
    index: int
    reducers: int  # 0: map-only
    total_order: bool = False
    maps: int | None = None  # known once the step's splits are written


PLAN_FORMAT = 1
"""The version of ``plan.json``; a worker refuses a plan of a format it does not know."""


@dataclass
class Plan:
    """What every task of a job needs to know, stored at ``<work>/plan.json``."""

    job_id: str
    job_name: str
    work_url: str
    output_url: str
    input_format: str
    output_format: str
    steps: list[StepPlan]
    memory: int
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    skip_bad_records: int = 0
    s3_endpoint: str | None = None
    created: str = ""
    params: dict[str, str] = field(default_factory=dict)  # the job's --param values
    encoding: str = UTF8  # how the first step's text inputs are decoded (--encoding)
    decode_errors: str = STRICT  # a line that does not decode (--decode-errors)
    extra: dict[str, Any] = field(default_factory=dict)
    format: int = PLAN_FORMAT

    # -- where things live under the work dir ------------------------------------------
    def url(self, *parts: str) -> str:
        return join(self.work_url, *parts)

    def job_code_url(self) -> str:
        return self.url("job.pkl")

    def splits_url(self, step: int) -> str:
        return self.url(f"steps/{step}/splits.json")

    def map_outputs_url(self, step: int) -> str:
        return self.url(f"steps/{step}/map-outputs.json")

    def boundaries_url(self, step: int) -> str:
        return self.url(f"steps/{step}/boundaries.pkl")

    def shuffle_url(self, step: int, task: int, attempt: str) -> str:
        return self.url(f"steps/{step}/shuffle/map-{task:05d}.{attempt}.bin")

    def step_output_url(self, step: int, part: int, attempt: str) -> str:
        """An intermediate step's output (input of the next step), attempt-scoped."""
        return self.url(f"steps/{step}/out/part-{part:05d}.{attempt}.bin")

    def marker_url(
        self, step: int, wave: str, task: int, attempt: str, failed: bool = False
    ) -> str:
        suffix = ".failed.json" if failed else ".json"
        return self.url(f"steps/{step}/tasks/{wave}-{task:05d}/{attempt}{suffix}")

    def final_part_url(self, part: int) -> str:
        """Where a task writes a part of the job's output: staged under the output's
        ``_temporary/<job-id>/``, published under :meth:`published_part_url` only by the
        run that owns the output (``kubemr.output``)."""
        return join(self.output_url, STAGING, self.job_id, f"part-{part:05d}")

    def published_part_url(self, part: int) -> str:
        return join(self.output_url, f"part-{part:05d}")

    def is_last(self, step: int) -> bool:
        return step == len(self.steps) - 1

    # -- serialisation -------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Plan:
        """The plan; a :class:`~kubemr.errors.VersionSkew` when it was written by a kubemr
        whose plan format this one does not know (never a retryable TypeError)."""
        data = json.loads(text)
        version = data.get("format", 0)
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if version > PLAN_FORMAT or unknown:
            what = f"format {version}" if version > PLAN_FORMAT else f"fields {unknown}"
            raise VersionSkew(
                f"the job's plan.json has {what}, which this kubemr (plan format "
                f"{PLAN_FORMAT}) does not know: run the job with the kubemr that planned it"
            )
        data["steps"] = [StepPlan(**s) for s in data["steps"]]
        return cls(**data)

    def map_count(self, step: int) -> int:
        """Map tasks of a step: the splits of the first, one per output of the wave
        before for a later one."""
        from kubemr.coordinator import StepShape, step_map_counts

        shapes = [StepShape(s.maps or 0, s.reducers) for s in self.steps]
        return step_map_counts(shapes)[step]

    def job_meta_url(self) -> str:
        return self.url("job.meta.json")

    def log_url(self, stage: str, index: int, attempt: str) -> str:
        return self.url(f"logs/{stage}/{index:05d}/{attempt}.log")


def task_name(step: int, steps: int, wave: str, index: int) -> str:
    """How tasks are named to users: ``map 3`` or ``step 2/3 reduce 0``."""
    prefix = f"step {step + 1}/{steps} " if steps > 1 else ""
    return f"{prefix}{wave} {index}"


def range_boundaries(sorted_keys: list[Any], partitions: int) -> list[Any]:
    """``partitions - 1`` cut points that split sorted sample keys into even ranges."""
    if partitions <= 1 or not sorted_keys:
        return []
    n = len(sorted_keys)
    return [sorted_keys[min(n - 1, (i * n) // partitions)] for i in range(1, partitions)]
