"""Turn bench results into the tables and plot of docs/benchmarks.md.

python -m bench.report bench/results/peers-1GB.json
"""

from __future__ import annotations

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DOCS = os.path.join(os.path.dirname(HERE), "docs")
START, END = "<!-- peers:start -->", "<!-- peers:end -->"
TITLES = {
    "wordcount": "Word count (Zipf text)",
    "sort": "Total sort (gensort-style 100-byte records, 10-byte keys)",
    "join": "Join and aggregate (events ⋈ users, amount and count per country)",
}


def tables(results: dict) -> str:
    out = [
        f"Input {results['size']} per job, {results['workers']} workers/cores, "
        f"{results['machine']['cores']} cores, {results['machine']['memory_gb']} GB, "
        f"Python {results['machine']['python']}, {results['date'][:10]}; "
        "times are medians over the runs shown. Ratio: the engine's time over kubemr-record's "
        "(above 1 means kubemr is faster).",
        "",
    ]
    for job, data in results["jobs"].items():
        out += [
            f"### {TITLES.get(job, job)}",
            "",
            "| engine | time | runs | MB/s | peak memory | time / kubemr |",
        ]
        out.append("| --- | --- | --- | --- | --- | --- |")
        rows = sorted(data["engines"].items(), key=lambda kv: kv[1]["seconds"])
        for engine, row in rows:
            ratio = f"{row['ratio_to_kubemr']:.2f}" if row.get("ratio_to_kubemr") else "—"
            name = f"**{engine}**" if engine.startswith("kubemr") else engine
            out.append(
                f"| {name} | {row['seconds']:.1f} s | {row.get('runs', 1)} | "
                f"{row['mb_per_s']:.1f} | {row['peak_mb']:.0f} MB | {ratio} |"
            )
        out.append("")
    out.append("![throughput per engine and job](img/peers-throughput.png)")
    return "\n".join(out)


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    jobs = list(results["jobs"])
    fig, axes = plt.subplots(1, len(jobs), figsize=(5 * len(jobs), 4))
    for ax, job in zip(axes if len(jobs) > 1 else [axes], jobs):
        rows = sorted(results["jobs"][job]["engines"].items(), key=lambda kv: -kv[1]["mb_per_s"])
        names = [e for e, _ in rows]
        values = [r["mb_per_s"] for _, r in rows]
        colors = ["tab:orange" if n.startswith("kubemr") else "tab:blue" for n in names]
        ax.barh(names[::-1], values[::-1], color=colors[::-1])
        ax.set_title(job)
        ax.set_xlabel("input MB/s (higher is better)")
    fig.suptitle(f"{results['size']} input, {results['workers']} cores")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    with open(sys.argv[1]) as fh:
        results = json.load(fh)
    plot(results, os.path.join(DOCS, "img", "peers-throughput.png"))
    page = os.path.join(DOCS, "benchmarks.md")
    with open(page) as fh:
        text = fh.read()
    start, end = text.index(START) + len(START), text.index(END)
    text = text[:start] + "\n" + tables(results) + "\n" + text[end:]
    with open(page, "w") as fh:
        fh.write(text)


if __name__ == "__main__":
    main()
