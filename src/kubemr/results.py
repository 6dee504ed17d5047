"""What a committed task attempt reports: its commit marker in the work dir."""

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
    worker: str = ""  # the process or pod that ran the attempt

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
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskResult:
        """The result from its marker; markers written before a field existed lack it."""
        data = dict(data)
        if data.get("partition_index") is not None:
            data["partition_index"] = PartitionIndex.from_json(data["partition_index"])
        data.setdefault("bad_records", [])
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})
