"""The controller's reconcile and scaling policy at full scale, on a simulated cluster.

    python -m bench.simulate [--scenario a|b|c|d|all] [--seed N] [--jobs N] [--tasks N]
                             [--max-pending N]

- a: one job of 10,000 map tasks and 100 reducers, workers.max 200, on 50 nodes;
- b: 1,000 concurrent jobs of 20-200 tasks on 100 nodes that hold a part of them;
- c: b with 10% of the nodes lost every 3 minutes, back 90 s later;
- d: b with random task failures below maxAttempts, and 3% of jobs with a task that
  cannot succeed (they must fail with its reason).

The simulator is tests/sim/cluster.py: the real reconcile against a simulated API server,
Job controller, scheduler and kubelet, in simulated seconds. Every invariant is checked on
every tick; violations are listed and make the exit status 1. The report is markdown: per
scenario the reconcile's cost (wall microseconds per call, milliseconds per job over its
life, reconciles per job) and the pods it is handed and reads (a pod's view is read once
per resourceVersion, as in the controller's process), the widest wave, and the API
writes per job.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tests.sim.cluster import SCENARIOS, Invariants, Report, Simulation


def run(
    name: str, seed: int | None, jobs: int | None, tasks: int | None, max_pending: int | None
) -> Report:
    kwargs: dict[str, Any] = {}
    if seed is not None:
        kwargs["seed"] = seed
    if name == "a" and tasks is not None:
        kwargs["tasks"] = tasks
    if name == "a" and max_pending is not None:
        kwargs["max_pending"] = max_pending
    if name != "a" and jobs is not None:
        kwargs["jobs"] = jobs
    scenario = SCENARIOS[name](**kwargs)
    print(f"running {name}: {scenario.title} ...", file=sys.stderr, flush=True)
    report = Simulation(scenario, Invariants(strict=False)).run()
    print(
        f"  {report.simulated_seconds} simulated s in {report.wall_seconds:.0f} s, "
        f"{len(report.violations)} violation(s)",
        file=sys.stderr,
        flush=True,
    )
    return report


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def tables(reports: list[Report]) -> str:
    lines = [
        "| scenario | jobs / tasks | cluster | simulated | bound | outcome "
        "| reconciles (per job) | µs per reconcile (mean / p99) "
        "| reconcile ms per job (mean / p99) | pods per reconcile: handed / read "
        "| most pods in one reconcile |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in reports:
        outcome = f"{r.succeeded} Succeeded"
        if r.failed or r.expected_failed:
            outcome += f", {r.failed} Failed (expected {r.expected_failed})"
        lines.append(
            f"| {r.scenario}: {r.title} | {r.jobs:,} / {r.tasks:,} "
            f"| {r.nodes} nodes, {r.cores:,} cores | {_duration(r.simulated_seconds)} "
            f"| {_duration(r.bound)} | {outcome} | {r.reconciles:,} ({r.reconciles_per_job:,.0f}) "
            f"| {r.reconcile_us_mean:,.0f} / {r.reconcile_us_p99:,.0f} "
            f"| {r.job_ms_mean:,.1f} / {r.job_ms_p99:,.1f} "
            f"| {r.pods_per_reconcile:,.0f} / {r.pods_read_per_reconcile:,.1f} "
            f"| {r.max_pods_per_reconcile:,} |"
        )
    lines += [
        "",
        "| scenario | status writes per job (message only) | Job creations per job "
        "| scale patches per job | events per job | max status bytes "
        "| pods (lost to nodes) | longest wait for a wave's first pod | widest wave "
        "| violations | wall |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in reports:
        c = r.counters
        lines.append(
            f"| {r.scenario} | {r.status_writes_per_job:,.1f} ({r.message_only_writes:.0%}) "
            f"| {r.jobs_created_per_job:.2f} | {r.scale_patches_per_job:.1f} "
            f"| {r.events_per_job:.1f} | {r.max_status_bytes:,} "
            f"| {c.pods_created:,} ({c.pods_disrupted:,}) | {r.max_wave_wait} s "
            f"| {r.peak_wave_pods} | {len(r.violations)} | {_duration(r.wall_seconds)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    parser.add_argument("--seed", type=int, default=None, help="default: each scenario's own")
    parser.add_argument("--jobs", type=int, default=None, help="jobs of b, c and d")
    parser.add_argument("--tasks", type=int, default=None, help="map tasks of a")
    parser.add_argument("--max-pending", type=int, default=None, help="workers.maxPending of a")
    args = parser.parse_args(argv)
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    reports = [run(n, args.seed, args.jobs, args.tasks, args.max_pending) for n in names]
    print(tables(reports))
    violations = [v for r in reports for v in r.violations]
    for violation in violations[:20]:
        print(f"- {violation}")
    if len(violations) > 20:
        print(f"- ... and {len(violations) - 20} more")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
