"""Turn bench results into the tables and plots of docs/benchmarks.md.

    python -m bench.report bench/results/peers-1GB.json [bench/results/profile-100MB.json]

`python -m bench all` calls this itself. The peers block of the page shows the given
results file first, then every other full run in bench/results/peers-*.json (not the
*-partial.json of runs with fewer jobs or engines), largest input first.
"""

from __future__ import annotations

import glob
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DOCS = os.path.join(os.path.dirname(HERE), "docs")
RESULTS = os.path.join(HERE, "results")
PEERS = ("<!-- peers:start -->", "<!-- peers:end -->")
PROFILE = ("<!-- profile:start -->", "<!-- profile:end -->")
TITLES = {
    "wordcount": "Word count (Zipf text)",
    "sort": "Total sort (gensort-style 100-byte records, 10-byte keys)",
    "join": "Join and aggregate (events ⋈ users, amount and count per country)",
}
PRELIMINARY = 1_000_000_000  # below this input size, fixed start-up costs dominate


def _load(path: str) -> dict:
    with open(path) as fh:
        return json.load(fh)


def _seconds(s: float) -> str:
    return f"{s:.2f} s" if s < 10 else f"{s:.1f} s"


def machine(results: dict) -> str:
    m = results["machine"]
    facts = [
        f"{m['cores']} cores",
        f"{m['memory_gb']} GB memory",
        f"Python {m['python']}",
    ]
    if m.get("java"):
        facts.append(m["java"].replace('"', ""))
    if m.get("os"):
        facts.append(m["os"])
    versions = ", ".join(v for v in m.get("versions", {}).values() if v)
    line = "Machine: " + ", ".join(facts) + "."
    if versions:
        line += f" Engines: kubemr {m['versions'].get('kubemr', '')}; " + "; ".join(
            v for k, v in m["versions"].items() if k != "kubemr"
        )
    return line + "."


PEER_FRAMEWORKS = ("spark", "dask", "lithops", "mrjob")
TIMES = "\u00d7"  # the multiplication sign of ratios
KUBEMR_BEST = ("kubemr-record", "kubemr-batch")  # the forms the goals compare


def _sizes(results: dict) -> list[tuple[int, dict]]:
    """(size in bytes, {job: {input_mb, engines}}) for every size of the run, smallest
    first; a results file from before sizes were timed alike has only its main size."""
    by_size = results.get("by_size") or {str(_size_bytes(results)): results["jobs"]}
    return sorted(((int(size), jobs) for size, jobs in by_size.items()), key=lambda kv: kv[0])


def _timed(data: dict) -> dict[str, dict]:
    return {e: r for e, r in data["engines"].items() if "seconds" in r}


def _best_kubemr(rows: dict[str, dict]) -> tuple[str, float] | None:
    timed = [(rows[e]["seconds"], e) for e in KUBEMR_BEST if e in rows]
    if not timed:
        return None
    seconds, engine = min(timed)
    return engine, seconds


def goals(results: dict) -> str:
    """The performance goals, each measured in this run: met or by how much it is missed."""
    out = ["| goal | size | measured | met |", "| --- | --- | --- | --- |"]
    for size, jobs in _sizes(results):
        for job, data in jobs.items():
            rows = _timed(data)
            best = _best_kubemr(rows)
            peers = [(rows[e]["seconds"], e) for e in PEER_FRAMEWORKS if e in rows]
            if best and peers:
                seconds, peer = min(peers)
                ratio = seconds / best[1]
                out.append(
                    f"| faster than every peer framework: {job} | {_mb(size)} | "
                    f"{best[0]} {_seconds(best[1])}, fastest peer {peer} {_seconds(seconds)} "
                    f"({ratio:.2f}{TIMES}) | {'yes' if ratio > 1 else 'no'} |"
                )
    for size, jobs in _sizes(results):
        rows = _timed(jobs.get("wordcount", {"engines": {}}))
        if "kubemr-record" in rows and "plain-Nproc" in rows:
            ratio = rows["kubemr-record"]["seconds"] / rows["plain-Nproc"]["seconds"]
            out.append(
                f"| per-record word count with built-ins within 1.10{TIMES} of the hand-inlined "
                f"plain N-process script | {_mb(size)} | kubemr-record / plain-Nproc "
                f"{ratio:.2f}{TIMES} | {'yes' if ratio <= 1.10 else 'no'} |"
            )
    for size, jobs in _sizes(results):
        rows = _timed(jobs.get("sort", {"engines": {}}))
        best = _best_kubemr(rows)
        if size >= PRELIMINARY and best and "coreutils" in rows:
            gnu = rows["coreutils"]
            ratio = best[1] / gnu["seconds"]
            out.append(
                f"| total sort within 1.5{TIMES} of `LC_ALL=C sort`, memory bounded | "
                f"{_mb(size)} | {best[0]} / coreutils {ratio:.2f}{TIMES}; peak "
                f"{rows[best[0]]['peak_mb']:.0f} MB against {gnu['peak_mb']:.0f} MB | "
                f"{'yes' if ratio <= 1.5 else 'no'} |"
            )
    return "\n".join(out)


def tables(results: dict) -> str:
    size = results["size"]
    date = results["date"][:10]
    sizes = _sizes(results)
    listed = ", ".join(_mb(s) for s, _ in sizes)
    heading = f"### {listed} per job, {results['workers']} workers, {date}"
    if _size_bytes(results) < PRELIMINARY:
        heading += " (preliminary: small input)"
    ran = {e for _, jobs in sizes for data in jobs.values() for e in data["engines"]}
    missing = [e for e in ENGINE_COLORS if e not in ran]
    out = [heading, "", machine(results), ""]
    if missing:
        out += [f"Engines not in this run: {', '.join(missing)}.", ""]
    out += [
        f"Times are medians over the runs shown (at most {results.get('repeat', 3)}). "
        "MB/s: input bytes over wall time. Peak memory: the largest summed RSS of the "
        "engine's process tree. Ratio: the engine's time over the faster of kubemr-record "
        "and kubemr-batch (above 1: kubemr is faster).",
        "",
        "#### The goals, measured in this run",
        "",
        goals(results),
        "",
    ]
    for job in results["jobs"]:
        for _, jobs in sizes:
            if job not in jobs:
                continue
            data = jobs[job]
            out += [
                f"#### {TITLES.get(job, job)} — {data['input_mb']:.0f} MB",
                "",
                "| engine | time | runs | MB/s | peak memory | time / kubemr |",
                "| --- | --- | ---: | ---: | ---: | ---: |",
            ]
            ok = _timed(data)
            best = _best_kubemr(ok)
            for engine, row in sorted(ok.items(), key=lambda kv: kv[1]["seconds"]):
                ratio = f"{row['seconds'] / best[1]:.2f}" if best else "—"
                name = f"**{engine}**" if engine.startswith("kubemr") else engine
                out.append(
                    f"| {name} | {_seconds(row['seconds'])} | {row.get('runs', 1)} | "
                    f"{row['mb_per_s']:.1f} | {row['peak_mb']:.0f} MB | {ratio} |"
                )
            for engine, row in data["engines"].items():
                if engine in ok:
                    continue
                reason = row.get("error") or f"skipped: {row.get('skipped', 'not run')}"
                reason = reason.splitlines()[-1][:120].replace("|", "/")
                out.append(f"| {engine} | {reason} | — | — | — | — |")
            out.append("")
    slug = size.replace(" ", "")
    out.append(f"![input MB/s per engine and job, {size}](img/peers-throughput-{slug}.png)")
    if any(results.get("scaling", {}).values()):
        out += ["", f"![time against input size](img/peers-scaling-{slug}.png)"]
    return "\n".join(out)


def plot_throughput(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    jobs = list(results["jobs"])
    fig, axes = plt.subplots(1, len(jobs), figsize=(5 * len(jobs), 4), squeeze=False)
    for ax, job in zip(axes[0], jobs):
        rows = [(e, r) for e, r in results["jobs"][job]["engines"].items() if "mb_per_s" in r]
        rows.sort(key=lambda kv: kv[1]["mb_per_s"])
        names = [e for e, _ in rows]
        colors = ["tab:orange" if n.startswith("kubemr") else "tab:blue" for n in names]
        ax.barh(names, [r["mb_per_s"] for _, r in rows], color=colors)
        ax.set_title(TITLES.get(job, job).split(" (")[0])
        ax.set_xlabel("input MB/s (higher is better)")
    fig.suptitle(
        f"{results['size']} input per job, {results['workers']} workers, {results['date'][:10]}"
    )
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_scaling(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    jobs = [j for j, curve in results.get("scaling", {}).items() if curve]
    fig, axes = plt.subplots(1, len(jobs), figsize=(5 * len(jobs), 4), squeeze=False)
    for ax, job in zip(axes[0], jobs):
        sizes: set[int] = set()
        for engine, points in sorted(results["scaling"][job].items(), key=_engine_order):
            xs = sorted(points, key=int)
            sizes.update(int(x) for x in xs)
            width = 2.5 if engine.startswith("kubemr") else 1
            ax.plot([int(x) / 1e6 for x in xs], [points[x] for x in xs], "o-", label=engine,
                    linewidth=width, color=_color(engine))  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = sorted(sizes)
        ax.set_xticks([t / 1e6 for t in ticks], [_mb(t) for t in ticks])
        ax.minorticks_off()
        ax.set_title(TITLES.get(job, job).split(" (")[0])
        ax.set_xlabel("input MB")
        ax.set_ylabel("wall seconds (lower is better)")
        ax.legend(fontsize=7)
    fig.suptitle(f"time against input size, {results['workers']} workers")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


ENGINE_COLORS = {
    "kubemr-record": "tab:orange", "kubemr-batch": "tab:red",
    "kubemr-reducejoin": "tab:pink", "plain-1proc": "tab:gray",
    "plain-Nproc": "black", "spark": "tab:blue", "dask": "tab:green", "mrjob": "tab:brown",
    "lithops": "tab:purple", "coreutils": "tab:olive",
}  # fmt: skip


def _color(engine: str) -> str:
    return ENGINE_COLORS.get(engine, "tab:cyan")


def _engine_order(item: tuple[str, object]) -> int:
    order = list(ENGINE_COLORS)
    return order.index(item[0]) if item[0] in order else len(order)


def _mb(size: int) -> str:
    return f"{size / 1e9:g} GB" if size >= 1e9 else f"{size / 1e6:g} MB"


def _replace(text: str, markers: tuple[str, str], block: str) -> str:
    start, end = markers
    if start not in text:
        return text.rstrip("\n") + f"\n\n{start}\n{block}\n{end}\n"
    head, rest = text.split(start, 1)
    return head + start + "\n" + block + "\n" + end + rest.split(end, 1)[1]


def _size_bytes(results: dict) -> int:
    from kubemr.sizes import parse_size

    return results.get("size_bytes") or parse_size(results["size"])


def _size_key(path: str) -> int:
    return _size_bytes(_load(path))


def write_docs(path: str) -> None:
    """Plots for every peers results file; the page's peers block, ``path`` first."""
    others = [
        p
        for p in glob.glob(os.path.join(RESULTS, "peers-*.json"))
        if os.path.abspath(p) != os.path.abspath(path) and not p.endswith("-partial.json")
    ]
    blocks = []
    for p in [path, *sorted(others, key=_size_key, reverse=True)]:
        results = _load(p)
        slug = results["size"].replace(" ", "")
        plot_throughput(results, os.path.join(DOCS, "img", f"peers-throughput-{slug}.png"))
        if any(results.get("scaling", {}).values()):
            plot_scaling(results, os.path.join(DOCS, "img", f"peers-scaling-{slug}.png"))
        blocks.append(tables(results))
    page = os.path.join(DOCS, "benchmarks.md")
    with open(page) as fh:
        text = fh.read()
    with open(page, "w") as fh:
        fh.write(_replace(text, PEERS, "\n\n".join(blocks)))


def profile_tables(summary: dict) -> str:
    out = [
        f"cProfile of map task 0 and reduce task 0 of each job's first step, "
        f"{summary['size']} input, {summary['date'][:10]}: self time by area, largest first.",
        "",
    ]
    for name, tasks in summary.items():
        if not isinstance(tasks, dict):
            continue
        out += [f"**{name}**", "", "| task | profiled | where the time goes |"]
        out.append("| --- | ---: | --- |")
        for wave, t in tasks.items():
            total = t["total_seconds"] or 1.0
            areas = ", ".join(
                f"{area} {seconds / total:.0%}"
                for area, seconds in t["areas"][:5]
                if seconds / total >= 0.02
            )
            out.append(f"| {wave} | {t['total_seconds']:.2f} s | {areas} |")
        out.append("")
    return "\n".join(out).rstrip("\n")


def write_profile(path: str) -> None:
    page = os.path.join(DOCS, "benchmarks.md")
    with open(page) as fh:
        text = fh.read()
    with open(page, "w") as fh:
        fh.write(_replace(text, PROFILE, profile_tables(_load(path))))


def main() -> None:
    for path in sys.argv[1:]:
        if os.path.basename(path).startswith("profile-"):
            write_profile(path)
        else:
            write_docs(path)


if __name__ == "__main__":
    main()
