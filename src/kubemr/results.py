"""What a task attempt reports: its commit marker in the work dir (and what a failed
attempt adds to its failure marker).

Every attempt records where and when it ran and what it used: start and end (epoch
seconds; for a pod's one attempt, the start of the worker process, which is the
container's start), the worker (pod, or host:pid) and node, records and bytes in and
out, bytes spilled to local disk, shuffle bytes fetched, storage requests, CPU seconds
(user + system; for a pod's one attempt, its whole process's, start-up included) and the
process's peak resident memory. In a local worker process that runs attempt
after attempt, the peak memory is the process's peak so far, not the attempt's alone
(the operating system keeps no per-attempt peak). All of it is counted per attempt,
never per record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubemr.shuffle import PartitionIndex

MAP = "map"
REDUCE = "reduce"


@dataclass
class TaskResult:
    """What a committed attempt reports (also stored as its commit marker)."""

    step: int
    wave: str
    index: int
    attempt: str
    output_url: str
    output_bytes: int
    partition_index: PartitionIndex | None
    counters: dict[str, dict[str, int]]
    seconds: float
    storage: dict[str, Any] = field(default_factory=dict)
    # Up to 5 input records a map task skipped (--skip-bad-records), as "file:line: why".
    bad_records: list[str] = field(default_factory=list)
    started: float = 0.0  # wall clock (epoch seconds), for stage timing and reports
    finished: float = 0.0
    worker: str = ""  # the pod, or host:pid, that ran the attempt
    node: str | None = None  # the pod's node (None outside Kubernetes)
    records_in: int = 0  # map: input records; reduce: shuffle records merged
    records_out: int = 0  # map: shuffle (or output) records; reduce: output records
    bytes_in: int = 0  # map: input bytes read; reduce: shuffle bytes fetched
    bytes_out: int = 0  # the attempt's output object
    spill_bytes: int = 0  # map: sorted runs spilled to local disk before the final merge
    shuffle_bytes_fetched: int = 0  # reduce: its partition of every map output
    cpu_seconds: float = 0.0  # user + system CPU of the attempt
    peak_rss_bytes: int = 0  # the process's peak resident memory when the attempt ended
    # Map tasks with reducers: [partition, [[key as JSON text, estimated records], ...]]
    # from a sample of the task's sorted output (kubemr.shuffle.sample_summary).
    key_sample: list[list[Any]] = field(default_factory=list)

    @property
    def storage_requests(self) -> int:
        return sum(self.storage.get("requests", {}).values())

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "wave": self.wave,
            "index": self.index,
            "attempt": self.attempt,
            "output_url": self.output_url,
            "output_bytes": self.output_bytes,
            "partition_index": self.partition_index.to_json() if self.partition_index else None,
            "counters": self.counters,
            "seconds": self.seconds,
            "storage": self.storage,
            "bad_records": self.bad_records,
            "started": self.started,
            "finished": self.finished,
            "worker": self.worker,
            "node": self.node,
            "records_in": self.records_in,
            "records_out": self.records_out,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "spill_bytes": self.spill_bytes,
            "shuffle_bytes_fetched": self.shuffle_bytes_fetched,
            "cpu_seconds": self.cpu_seconds,
            "peak_rss_bytes": self.peak_rss_bytes,
            "key_sample": self.key_sample,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskResult:
        """The result from its marker; markers written before a field existed lack it."""
        data = dict(data)
        if data.get("partition_index") is not None:
            data["partition_index"] = PartitionIndex.from_json(data["partition_index"])
        data.setdefault("bad_records", [])
        if "records_in" not in data:  # a marker from before per-attempt records
            data.update(_io_from_counters(data))
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})


def _io_from_counters(data: dict[str, Any]) -> dict[str, Any]:
    """Records and bytes in and out of an older marker, from its counters; its worker
    split into pod and node (it was written as ``pod@node``)."""
    kub = data.get("counters", {}).get("kubemr", {})
    out: dict[str, Any] = {"bytes_out": data.get("output_bytes", 0)}
    if data.get("wave") == REDUCE:
        out["records_in"] = kub.get("reduce_input_records", 0)
        out["records_out"] = kub.get("reduce_output_records", 0)
    else:
        out["records_in"] = kub.get("map_input_records", 0)
        out["bytes_in"] = kub.get("map_input_bytes", 0)
        out["records_out"] = kub.get("shuffle_records", kub.get("map_output_records", 0))
    worker = data.get("worker") or ""
    if "@" in worker and "node" not in data:
        out["worker"], _, out["node"] = worker.partition("@")
    return out
