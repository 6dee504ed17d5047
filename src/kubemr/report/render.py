"""The job report as a self-contained HTML page and a PNG, and as JSON.

Each chart is drawn once with matplotlib into a figure (or a part of one): saved as SVG it
is inlined into the page, and the same drawing functions fill the panels of the PNG. The
page loads nothing at view time: inline SVG and CSS, no scripts. Every string that comes
from the job (its name, keys, error messages, worker names) is escaped; the charts carry
only numbers and names kubemr makes, except worker names as row labels, which matplotlib
escapes in its SVG.

matplotlib is an optional extra (``pip install 'kubemr[report]'``): the worker image does
not need it, and the JSON form works without it.
"""

from __future__ import annotations

import datetime as _dt
import html
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from kubemr.errors import KubemrError
from kubemr.report.analysis import (
    HOT_KEY_SHARE,
    SKEW_FACTOR,
    SKEW_MIN_BYTES,
    STRAGGLER_FACTOR,
    WAVES,
    Analysis,
    Attempt,
    Spread,
    StepSkew,
    Wave,
    nice_step,
    summary_warnings,
    task_name,
)
from kubemr.report.cost import Cost, format_money
from kubemr.sizes import format_size

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import FigureBase

INSTALL_HINT = "pip install 'kubemr[report]'"
TIMES = "\u00d7"
DASH = "\u2013"

WAVE_COLOURS = (
    "#4c78a8",  # blue
    "#f58518",  # orange
    "#54a24b",  # green
    "#b279a2",  # purple
    "#72b7b2",  # teal
    "#eeca3b",  # yellow
    "#9d755d",  # brown
    "#bab0ac",  # grey
)
"""One per wave, in the job's order (step 0 map, step 0 reduce, step 1 map, ...); no red,
which marks failures."""
FAILED_COLOUR = "#d62728"
SKEWED_COLOUR = "#d95f02"
"""The largest partition of a skewed step."""
INK = "#333333"
GRID = "#e5e5e5"
FONT_SIZE = 8.5
WIDTH_IN = 10.0
"""Chart width in inches (the page scales the SVG to its column)."""
PNG_DPI = 100

_RC = {
    "svg.fonttype": "none",  # text stays text: small, searchable, in the page's font
    "svg.hashsalt": "kubemr-report",  # the same ids for the same report
    "text.parse_math": False,  # '$' in a label is a dollar sign, not math
    "font.size": FONT_SIZE,
    "axes.edgecolor": "#999999",
    "axes.labelcolor": INK,
    "axes.titlesize": FONT_SIZE + 1,
    "axes.titlelocation": "left",
    "xtick.color": INK,
    "ytick.color": INK,
    "legend.frameon": False,
}


class MissingExtra(KubemrError):
    """The charts need matplotlib, an optional extra."""


def wave_colour(order: int) -> str:
    return WAVE_COLOURS[order % len(WAVE_COLOURS)]


def _matplotlib() -> Any:
    try:
        import matplotlib
        from matplotlib.figure import Figure  # noqa: F401  (checks the whole package loads)
    except ImportError:
        raise MissingExtra(
            f"the report's charts are drawn with matplotlib, which is not installed: "
            f"{INSTALL_HINT} (or --json for the numbers alone)"
        ) from None
    return matplotlib


# -- number formats -------------------------------------------------------------------------


def _seconds(value: float) -> str:
    """Axis ticks and table cells: ``0.5s``, ``12s``, ``4m05s``, ``1h02m``."""
    if value < 10:
        return f"{value:.1f}s" if value % 1 else f"{value:.0f}s"
    total = round(value)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _si(value: float) -> str:
    """``950``, ``12k``, ``3.4M``."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            scaled = value / size
            return f"{scaled:.1f}{unit}" if scaled < 10 else f"{scaled:.0f}{unit}"
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def _bytes_tick(value: float, _pos: Any = None) -> str:
    return "0" if value == 0 else format_size(value).replace(".0 ", " ")


def _byte_ticks(axis: Any, top: float) -> None:
    """Ticks at round binary sizes (0, 50 MiB, 100 MiB...), not at round decimal ones."""
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    unit = 1.0
    while top / unit >= 1024 and unit < 1024**4:
        unit *= 1024
    axis.set_major_locator(MultipleLocator(nice_step(max(top, 1.0) / unit / 5) * unit))
    axis.set_major_formatter(FuncFormatter(_bytes_tick))


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "—"
    return _dt.datetime.fromtimestamp(epoch, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _wave_label(w: Wave, steps: int) -> str:
    return f"step {w.step} {w.wave}" if steps > 1 else w.wave


def _steps(report: dict[str, Any], analysis: Analysis) -> int:
    return max(len(report.get("steps") or []), len({w.step for w in analysis.waves}), 1)


# -- the charts (each draws into a figure or a part of one) --------------------------------


def _style(ax: Axes) -> None:
    ax.grid(True, axis="x", color=GRID, linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _time_axis(ax: Axes, end: float) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.set_xlim(0, max(end, 1e-3) * 1.02)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=10, steps=[1, 2, 2.5, 3, 5, 6, 10]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: _seconds(v) if v >= 0 else ""))
    ax.set_xlabel("time since the job started")


def timeline_height(analysis: Analysis) -> float:
    return min(7.5, max(2.2, 1.3 + 0.24 * analysis.timeline.rows))


def draw_timeline(fig: FigureBase, analysis: Analysis, steps: int) -> None:
    """One row per worker slot, one bar per attempt, coloured by wave; failed attempts
    pale with a red edge and a red cross at their end, stragglers outlined and named."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    ax = fig.subplots()
    tl = analysis.timeline
    height = 0.72
    for bar in tl.bars:
        a = bar.attempt
        colour = wave_colour(bar.wave_order)
        failed = a.outcome == "failed"
        faded = failed or a.outcome == "superseded"
        ax.barh(
            bar.row,
            max(a.duration, tl.end * 0.002),  # a very short attempt still shows
            left=a.start,
            height=height,
            color=colour,
            alpha=0.4 if faded else 1.0,
            edgecolor=FAILED_COLOUR if failed else (INK if bar.straggler else "white"),
            linewidth=1.2 if failed or bar.straggler else 0.4,
        )
        if failed:
            ax.plot([a.end], [bar.row], marker="x", color=FAILED_COLOUR, markersize=6, mew=1.8)
        if bar.straggler:
            name = task_name(a.step, a.wave, a.index, steps)
            # Inside the bar when it fits (about 5.5 points a character on ~650 points of
            # axis), else just after it.
            inside = a.duration / max(tl.end, 1e-9) * 650 > len(name) * 5.5 + 8
            ax.annotate(
                name,
                (a.start if inside else a.end, bar.row),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize=FONT_SIZE - 1,
                color="white" if inside else INK,
            )
    ax.set_ylim(tl.rows - 0.5, -0.5)
    ax.set_yticks(range(tl.rows))
    labels = [label if len(label) <= 22 else label[:21] + "…" for label in tl.row_labels]
    if tl.rows > 30:  # thin the labels of a tall chart
        every = (tl.rows + 29) // 30
        labels = [t if i % every == 0 else "" for i, t in enumerate(labels)]
    ax.set_yticklabels(labels, fontsize=FONT_SIZE - 1)
    _time_axis(ax, tl.end)
    _style(ax)
    handles: list[Any] = [
        Patch(color=wave_colour(w.order), label=_wave_label(w, steps)) for w in analysis.waves
    ]
    if analysis.failed:
        handles.append(
            Line2D([], [], color=FAILED_COLOUR, marker="x", linestyle="", label="failed attempt")
        )
    if analysis.stragglers:
        handles.append(
            Patch(
                facecolor="white", edgecolor=INK, label=f"straggler (>{STRAGGLER_FACTOR:g}{TIMES})"
            )
        )
    ax.legend(
        handles=handles,
        loc="lower left",
        bbox_to_anchor=(0, 1.0),
        ncol=min(len(handles), 8),
        fontsize=FONT_SIZE - 0.5,
        handlelength=1.2,
        borderaxespad=0.2,
    )


def draw_throughput(fig: FigureBase, analysis: Analysis) -> None:
    """Input bytes and records read per second, map and reduce apart."""
    from matplotlib.ticker import FuncFormatter

    tp = analysis.throughput
    axes = fig.subplots(1, 2)
    width = tp.bin_seconds
    xs = [s + width / 2 for s in tp.starts]
    order = {w.wave: w.order for w in sorted(analysis.waves, key=lambda w: -w.order)}
    for ax, series, title, fmt in (
        (axes[0], tp.bytes_per_second, "input bytes per second", _bytes_tick),
        (axes[1], tp.records_per_second, "input records per second", lambda v, _p: _si(v)),
    ):
        for wave in WAVES:
            values = series[wave]
            if not any(values):
                continue
            colour = wave_colour(order.get(wave, WAVES.index(wave)))
            ax.step(xs, values, where="mid", color=colour, linewidth=1.4, label=wave)
            ax.fill_between(xs, values, step="mid", color=colour, alpha=0.15, linewidth=0)
        ax.set_title(title)
        ax.yaxis.set_major_formatter(FuncFormatter(fmt))
        ax.set_ylim(bottom=0)
        if series is tp.bytes_per_second:
            _byte_ticks(ax.yaxis, ax.get_ylim()[1])
        _time_axis(ax, analysis.timeline.end)
        _style(ax)
        ax.grid(True, axis="y", color=GRID, linewidth=0.6)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=FONT_SIZE - 0.5, loc="best")


def distributions_height(analysis: Analysis) -> float:
    return min(6.0, max(1.8, 0.9 + 0.42 * len(analysis.waves)))


def _box(ax: Axes, y: float, spread: Spread, colour: str) -> None:
    """Min to max as a line, the middle half as a box, the median as a bar."""
    ax.plot([spread.min, spread.max], [y, y], color=colour, linewidth=1.2)
    ax.barh(
        y,
        max(spread.p75 - spread.p25, 0.0),
        left=spread.p25,
        height=0.5,
        color=colour,
        alpha=0.35,
        edgecolor=colour,
    )
    ax.plot([spread.median, spread.median], [y - 0.3, y + 0.3], color=colour, linewidth=2.2)
    ax.plot([spread.p90], [y], marker="|", color=colour, markersize=9, mew=1.5)


def draw_distributions(fig: FigureBase, analysis: Analysis, steps: int) -> None:
    """Per wave: the spread of task durations and of task input sizes, each task a dot."""
    from matplotlib.ticker import FuncFormatter

    axes = fig.subplots(1, 2, sharey=True)
    waves = analysis.waves
    done: dict[tuple[int, int], list[Attempt]] = {w.key: [] for w in waves}
    for a in analysis.attempts:
        if a.outcome != "failed":
            done[a.wave_key].append(a)
    for ax, title, value, spread_of, fmt in (
        (
            axes[0],
            "task duration",
            lambda a: a.duration,
            lambda w: w.duration,
            lambda v, _p: _seconds(v),
        ),
        (
            axes[1],
            "task input",
            lambda a: float(a.bytes_in),
            lambda w: w.input_bytes,
            _bytes_tick,
        ),
    ):
        for y, w in enumerate(waves):
            spread = spread_of(w)
            if spread is None:
                continue
            colour = wave_colour(w.order)
            _box(ax, y, spread, colour)
            points = done[w.key]
            if len(points) <= 2000:  # each task as a dot, spread over the row
                ys = [y + 0.32 * (((i * 0.618034) % 1.0) - 0.5) for i in range(len(points))]
                ax.scatter(
                    [value(a) for a in points], ys, s=6, color=colour, alpha=0.7, linewidths=0
                )
        ax.set_title(title)
        ax.set_xlim(left=0)
        ax.xaxis.set_major_formatter(FuncFormatter(fmt))
        if fmt is _bytes_tick:
            _byte_ticks(ax.xaxis, ax.get_xlim()[1])
        _style(ax)
    axes[0].set_yticks(range(len(waves)))
    axes[0].set_yticklabels([_wave_label(w, steps) for w in waves])
    axes[0].set_ylim(len(waves) - 0.5, -0.5)


def draw_skew(fig: FigureBase, skew: Sequence[StepSkew], steps: int) -> None:
    """Input bytes per reducer, the largest in a darker shade, the median dashed."""
    from matplotlib.ticker import MaxNLocator

    axes = fig.subplots(1, len(skew), squeeze=False)[0]
    for ax, s in zip(axes, skew):
        colours = [
            (SKEWED_COLOUR if s.skewed else "#6baed6") if p == s.largest else "#9ecae1"
            for p in range(len(s.partition_bytes))
        ]
        ax.bar(range(len(s.partition_bytes)), s.partition_bytes, color=colours, width=0.8)
        ax.axhline(s.median_bytes, color=INK, linestyle="--", linewidth=0.9)
        ratio = "—" if s.ratio is None else f"{s.ratio:.1f}{TIMES}"
        ax.set_title(
            (f"step {s.step}: " if steps > 1 else "")
            + ("uncompressed " if s.uncompressed else "")
            + f"bytes per reducer (largest {s.largest}: {ratio} the median)"
        )
        _byte_ticks(ax.yaxis, ax.get_ylim()[1])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=12))
        ax.set_xlabel("reducer (partition)")
        _style(ax)
        ax.grid(True, axis="y", color=GRID, linewidth=0.6)
        ax.grid(False, axis="x")


def _with_partitions(analysis: Analysis) -> list[StepSkew]:
    return [s for s in analysis.skew if s.partition_bytes]


def _charts(
    report: dict[str, Any], analysis: Analysis
) -> list[tuple[str, float, Callable[[FigureBase], None]]]:
    """(name, height in inches, draw) of each chart, in page order."""
    steps = _steps(report, analysis)
    charts: list[tuple[str, float, Callable[[FigureBase], None]]] = []
    if analysis.attempts:
        charts += [
            ("timeline", timeline_height(analysis), lambda f: draw_timeline(f, analysis, steps)),
            ("throughput", 2.3, lambda f: draw_throughput(f, analysis)),
            (
                "distributions",
                distributions_height(analysis),
                lambda f: draw_distributions(f, analysis, steps),
            ),
        ]
    skew = _with_partitions(analysis)
    if skew:
        charts.append(("skew", 2.4, lambda f: draw_skew(f, skew, steps)))
    return charts


_PROLOG = re.compile(r"^.*?(?=<svg\b)", re.S)
_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.S)
_SIZE_ATTRS = re.compile(r'\s(?:width|height)="[^"]*"')
_IDS = re.compile(r'(\bid="|url\(#|href="#)([^")]+)')


def _inline_svg(svg: str, name: str, label: str) -> str:
    """matplotlib's SVG made fit to inline: no XML prolog or metadata, ids prefixed with
    the chart's name (several charts share one document), sized by the page's CSS."""
    svg = _METADATA.sub("", _PROLOG.sub("", svg, count=1))
    svg = _IDS.sub(lambda m: f"{m.group(1)}{name}-{m.group(2)}", svg)
    head, rest = svg.split(">", 1)
    head = _SIZE_ATTRS.sub("", head)
    return f'{head} class="chart" role="img" aria-label="{html.escape(label)}">{rest.strip()}'


def chart_svgs(report: dict[str, Any], analysis: Analysis) -> dict[str, str]:
    """Each chart as inline SVG, by name."""
    matplotlib = _matplotlib()
    from matplotlib.figure import Figure

    out = {}
    with matplotlib.rc_context(_RC):
        for name, height, draw in _charts(report, analysis):
            fig = Figure(figsize=(WIDTH_IN, height), layout="constrained")
            draw(fig)
            buf = io.StringIO()
            fig.savefig(buf, format="svg", metadata={"Date": None})
            out[name] = _inline_svg(buf.getvalue(), name, f"{name} chart")
    return out


def render_png(report: dict[str, Any], analysis: Analysis) -> bytes:
    """The whole report's charts in one picture, under a line that names the job."""
    matplotlib = _matplotlib()
    from matplotlib.figure import Figure

    charts = _charts(report, analysis)
    said = summary_warnings(analysis)[:3]
    heights = [0.45 + 0.2 * len(said)] + [h for _n, h, _d in charts]
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(WIDTH_IN, sum(heights)), layout="constrained")
        parts = fig.subfigures(len(heights), 1, height_ratios=heights)
        parts = list(parts) if len(heights) > 1 else [parts]
        head = parts[0]
        head.text(0.01, 0.95, _headline(report, analysis), fontsize=FONT_SIZE + 2.5, va="top")
        for i, warning in enumerate(said):
            head.text(
                0.01,
                0.95 - (0.34 + 0.2 * i) / heights[0],
                "! " + warning.short,
                fontsize=FONT_SIZE,
                color=SKEWED_COLOUR,
                va="top",
            )
        for part, (_n, _h, draw) in zip(parts[1:], charts):
            draw(part)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=PNG_DPI, metadata={"Software": None})
    return buf.getvalue()


def _headline(report: dict[str, Any], analysis: Analysis) -> str:
    wall = analysis.wall_seconds
    parts = [
        f"{report.get('job', '?')}: {report.get('status', '?')}",
        f"{report.get('runner', '?')} runner",
        f"wall {_seconds(wall)}" if wall is not None else "still running",
        f"{len(analysis.attempts)} attempts",
    ]
    if analysis.warnings:
        parts.append(f"{len(analysis.warnings)} warnings")
    return "kubemr report — " + ", ".join(parts)


# -- the page ---------------------------------------------------------------------------------

_CSS = """
:root { --ink: #222; --muted: #666; --rule: #ddd; --warn: #fff4e5; --warn-edge: #f0a040;
        --bad: #d62728; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans",
       sans-serif; color: var(--ink); background: #fff; }
main { max-width: 1080px; margin: 0 auto; padding: 20px 24px 40px; }
h1 { font-size: 22px; margin: 0 0 4px; word-break: break-all; }
h2 { font-size: 16px; margin: 28px 0 6px; padding-bottom: 3px;
     border-bottom: 1px solid var(--rule); }
p.lead { color: var(--muted); margin: 4px 0 8px; }
.status { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 13px;
          background: #e8f3e8; color: #1e6b1e; }
.status.failed { background: #fde8e8; color: #9b1c1c; }
.status.running { background: #e8eef8; color: #1c4e9b; }
dl.facts { display: grid; grid-template-columns: max-content 1fr max-content 1fr;
           gap: 2px 14px; margin: 10px 0 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
ul.warnings { list-style: none; padding: 0; margin: 8px 0; }
ul.warnings li { background: var(--warn); border-left: 4px solid var(--warn-edge);
                 padding: 6px 10px; margin: 6px 0; }
ul.warnings li.failed { border-left-color: var(--bad); }
ul.warnings .advice { display: block; color: #5a4a2a; }
svg.chart { display: block; width: 100%; height: auto; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0; }
th, td { padding: 3px 10px 3px 0; text-align: left; vertical-align: top;
         border-bottom: 1px solid #eee; }
th { color: var(--muted); font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
code, td.key, td.error { font-family: ui-monospace, "DejaVu Sans Mono", monospace;
                         font-size: 12px; }
td.error { white-space: pre-wrap; overflow-wrap: anywhere; color: #7a1f1f;
           max-width: 560px; }
td.key { overflow-wrap: anywhere; max-width: 460px; }
.muted { color: var(--muted); }
footer { margin-top: 32px; color: var(--muted); font-size: 12px; }
"""


def _e(value: Any) -> str:
    """Escaped text of any value for HTML content or attributes."""
    return html.escape(str(value), quote=True)


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[int]) -> str:
    """A table of already escaped cells; ``numeric`` columns align right."""

    def cls(i: int) -> str:
        return ' class="n"' if i in numeric else ""

    out = ["<table><thead><tr>"]
    out += [f"<th{cls(i)}>{h}</th>" for i, h in enumerate(head)]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>")
        for i, cell in enumerate(row):
            out.append(cell if cell.startswith("<td") else f"<td{cls(i)}>{cell}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _spread_cells(spread: Spread | None, fmt: Callable[[float], str]) -> list[str]:
    if spread is None:
        return ["—", "—", "—"]
    return [_e(fmt(spread.median)), _e(fmt(spread.p90)), _e(fmt(spread.max))]


def _facts(report: dict[str, Any], analysis: Analysis) -> str:
    inp = report.get("input") or {}
    out = report.get("output") or {}
    workers = report.get("workers") or {}
    wall = analysis.wall_seconds
    if wall is None:
        last = analysis.timeline.end
        wall_text = f"running ({_seconds(last)} so far)"
    else:
        wall_text = _seconds(wall)
    worker_text = f"{workers.get('slots', '?')} slots"
    if workers.get("cpu_request") is not None:
        worker_text += f", {workers['cpu_request']:g} CPU"
    if workers.get("memory_request_bytes"):
        worker_text += f", {format_size(workers['memory_request_bytes'])} each"

    def size(part: dict[str, Any]) -> str:
        bits = []
        if part.get("files") is not None:
            bits.append(f"{part['files']:,} files")
        if part.get("bytes") is not None:
            bits.append(format_size(part["bytes"]))
        if part.get("records") is not None:
            bits.append(f"{part['records']:,} records")
        return ", ".join(bits) or "—"

    omitted = report.get("attempts_omitted") or 0
    steps = report.get("steps") or []
    tasks = ", ".join(
        f"{s.get('maps', 0)} map + {s.get('reduces', 0)} reduce"
        for s in steps
        if isinstance(s, dict)
    )
    facts = [
        ("runner", report.get("runner", "?")),
        ("wall time", wall_text),
        ("started", _when(report.get("started"))),
        ("finished", _when(report.get("finished"))),
        ("input", size(inp)),
        ("output", size(out)),
        ("output at", out.get("url", "—")),
        ("workers", worker_text),
        ("steps", f"{len(steps)}: {tasks}" if steps else "—"),
        (
            "attempts",
            f"{len(analysis.attempts):,} ({len(analysis.failed)} failed)"
            + (f", {omitted:,} more not in the data" if omitted else ""),
        ),
    ]
    cells = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts)
    return f'<dl class="facts">{cells}</dl>'


def _warnings_html(analysis: Analysis) -> str:
    if not analysis.warnings:
        return '<p class="lead">No skew, stragglers or failed attempts.</p>'
    items = "".join(
        f'<li class="{_e(w.kind)}">{_e(w.message)}<span class="advice">{_e(w.advice)}</span></li>'
        for w in analysis.warnings
    )
    return f'<ul class="warnings">{items}</ul>'


def _waves_table(analysis: Analysis, steps: int) -> str:
    rows = []
    for w in analysis.waves:
        swatch = (
            f'<td><span style="display:inline-block;width:10px;height:10px;'
            f'background:{wave_colour(w.order)};margin-right:6px"></span>'
            f"{_e(_wave_label(w, steps))}</td>"
        )
        rows.append(
            [
                swatch,
                _e(w.tasks),
                _e(f"{w.attempts} ({w.failed} failed)" if w.failed else w.attempts),
                _e(f"{_seconds(w.start)} {DASH} {_seconds(w.end)}"),
                *_spread_cells(w.duration, _seconds),
                _e(format_size(w.bytes_in)),
                _e(f"{w.records_in:,}"),
            ]
        )
    return _table(
        [
            "wave",
            "tasks",
            "attempts",
            f"from {DASH} to",
            "median",
            "p90",
            "slowest",
            "input",
            "records",
        ],
        rows,
        {1, 2, 4, 5, 6, 7, 8},
    )


def _stragglers_table(analysis: Analysis, steps: int) -> str:
    if not analysis.stragglers:
        return ""
    rows = []
    for s in analysis.stragglers[:50]:
        a = s.attempt
        rows.append(
            [
                _e(task_name(a.step, a.wave, a.index, steps)),
                f"<td><code>{_e(a.attempt)}</code></td>",
                _e(_seconds(a.duration)),
                _e(_seconds(s.wave_median)),
                _e("—" if s.factor is None else f"{s.factor:.1f}{TIMES}"),
                _e("—" if s.input_factor is None else f"{s.input_factor:.1f}{TIMES}"),
                _e(a.worker),
                _e(a.node or "—"),
            ]
        )
    more = len(analysis.stragglers) - len(rows)
    note = f'<p class="muted">and {more} more</p>' if more > 0 else ""
    head = [
        "task",
        "attempt",
        "took",
        "wave median",
        TIMES,
        f"input {TIMES} median",
        "worker",
        "node",
    ]
    return (
        f'<h2>Stragglers</h2><p class="lead">Attempts over {STRAGGLER_FACTOR:g}{TIMES} their '
        "wave's median duration.</p>" + _table(head, rows, {2, 3, 4, 5}) + note
    )


def _skew_html(analysis: Analysis, steps: int) -> str:
    parts = []
    for s in _with_partitions(analysis):
        if not s.top_keys:
            continue
        rows = [
            [
                f'<td class="key">{_e(k.key)}</td>',
                _e(f"{k.count:,}"),
                _e("—" if k.share is None else f"{k.share:.1%}"),
            ]
            for k in s.top_keys
        ]
        where = f"step {s.step}, " if steps > 1 else ""
        parts.append(
            f'<h3 style="font-size:14px;margin:12px 0 2px">Top keys of the largest partition '
            f"({where}reducer {s.largest}: {_e(format_size(s.max_bytes))}, "
            f"{s.partition_records[s.largest]:,} records)</h3>"
            + _table(["key (JSON)", "estimated count", "share of partition"], rows, {1, 2})
        )
    if parts:
        parts.append(
            '<p class="muted">Counts are estimated from a sample taken on the map side. A '
            f"partition of {SKEW_FACTOR:g}{TIMES} the median and at least "
            f"{_e(format_size(SKEW_MIN_BYTES))} is skewed; a key with {HOT_KEY_SHARE:.0%} or "
            "more of its records is a hot key.</p>"
        )
    return "".join(parts)


def _cost_html(cost: Cost) -> str:
    rows = []
    for line in cost.lines:
        if line.unit == "B":  # in GB, as it is priced
            quantity, unit = f"{line.quantity / 1e9:,.3g}", " GB"
        elif line.unit == "requests":
            quantity, unit = f"{line.quantity:,.0f}", " requests"
        else:
            quantity, unit = f"{line.quantity:,.1f}", f" {line.unit}"
        price = (
            f"{line.price:g} {cost.currency} / {line.price_unit}"
            if line.price is not None and cost.currency
            else "—"
        )
        amount = (
            format_money(line.amount, cost.currency)
            if line.amount is not None and cost.currency
            else "—"
        )
        rows.append([_e(line.item), _e(quantity + unit), _e(line.note), _e(price), _e(amount)])
    if cost.total is not None and cost.currency:
        rows.append(
            ["<b>total</b>", "", "", "", f"<b>{_e(format_money(cost.total, cost.currency))}</b>"]
        )
    use = []
    if cost.cpu_use is not None:
        use.append(f"CPU used was {cost.cpu_use:.0%} of CPU requested")
    if cost.memory_use is not None:
        use.append(f"peak memory {TIMES} time was {cost.memory_use:.0%} of memory requested")
    lead = (
        ""
        if cost.total is not None
        else '<p class="lead">Give a price table (--prices FILE) to see money.</p>'
    )
    note = f'<p class="muted">{_e("; ".join(use))}.</p>' if use else ""
    return lead + _table(["", "quantity", "what", "price", "cost"], rows, {1, 4}) + note


def _failed_html(analysis: Analysis, steps: int) -> str:
    if not analysis.failed:
        return ""
    rows = [
        [
            _e(task_name(a.step, a.wave, a.index, steps)),
            f"<td><code>{_e(a.attempt)}</code></td>",
            _e(f"{_seconds(a.start)} {DASH} {_seconds(a.end)}"),
            _e(a.worker),
            _e(a.node or "—"),
            f'<td class="error">{_e(a.error or "(no reason recorded)")}</td>',
        ]
        for a in analysis.failed[:200]
    ]
    more = len(analysis.failed) - len(rows)
    note = f'<p class="muted">and {more} more</p>' if more > 0 else ""
    return (
        "<h2>Failed attempts</h2>"
        + _table(["task", "attempt", "ran", "worker", "node", "error"], rows, set())
        + note
    )


def render_html(
    report: dict[str, Any], analysis: Analysis, cost: Cost, svgs: dict[str, str]
) -> str:
    """The page. ``svgs``: the charts from :func:`chart_svgs`."""
    from kubemr import __version__

    steps = _steps(report, analysis)
    job = str(report.get("job", "?"))
    status = str(report.get("status", "?"))
    status_class = status if status in ("failed", "running") else "ok"
    body = [
        f"<header><h1>{_e(job)}</h1>",
        f'<span class="status {_e(status_class)}">{_e(status)}</span>',
        f' <span class="muted">job id <code>{_e(report.get("job_id", "?"))}</code></span>',
        _facts(report, analysis),
        "</header>",
        '<section id="warnings"><h2>Warnings</h2>',
        _warnings_html(analysis),
        "</section>",
    ]
    if "timeline" in svgs:
        body += [
            '<section id="timeline"><h2>Timeline</h2>',
            '<p class="lead">One row per worker slot, one bar per task attempt; colour is the '
            "wave. Pale bars with a red edge failed, pale ones without were superseded by "
            "another attempt of the same task.</p>",
            svgs["timeline"],
            _waves_table(analysis, steps),
            "</section>",
        ]
    if "throughput" in svgs:
        body += [
            '<section id="throughput"><h2>Throughput</h2>',
            f'<p class="lead">Input read per second, in bins of '
            f"{_e(_seconds(analysis.throughput.bin_seconds))}; each attempt's input spread "
            "over its run.</p>",
            svgs["throughput"],
            "</section>",
        ]
    if "distributions" in svgs:
        body += [
            '<section id="distributions"><h2>Task durations and inputs</h2>',
            '<p class="lead">Per wave, attempts that ran to the end: the line spans the '
            "fastest to the slowest, the box the middle half, the thick bar is the median, "
            "the tick the 90th percentile; each dot a task.</p>",
            svgs["distributions"],
            _stragglers_table(analysis, steps),
            "</section>",
        ]
    if "skew" in svgs:
        body += [
            '<section id="skew"><h2>Reduce-side skew</h2>',
            '<p class="lead">Input bytes per reducer (uncompressed where the report has '
            "it); the dashed line is the median.</p>",
            svgs["skew"],
            _skew_html(analysis, steps),
            "</section>",
        ]
    body += [
        '<section id="cost"><h2>Cost</h2>',
        _cost_html(cost),
        "</section>",
        _failed_html(analysis, steps),
        f"<footer>kubemr {_e(__version__)} · report format {_e(report.get('format', '?'))}"
        "</footer>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>kubemr report: {_e(job)}</title><style>{_CSS}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )


# -- JSON -------------------------------------------------------------------------------------


def _rounded(spread: Spread | None) -> dict[str, float] | None:
    return None if spread is None else {k: round(v, 3) for k, v in asdict(spread).items()}


def report_json(
    report: dict[str, Any], analysis: Analysis, cost: Cost, files: dict[str, str]
) -> dict[str, Any]:
    """What ``kubemr report --json`` prints: the findings, the cost, the files written."""
    steps = _steps(report, analysis)

    def attempt_ref(a: Attempt) -> dict[str, Any]:
        return {
            "task": task_name(a.step, a.wave, a.index, steps),
            "step": a.step,
            "wave": a.wave,
            "index": a.index,
            "attempt": a.attempt,
            "seconds": round(a.duration, 3),
            "worker": a.worker,
            "node": a.node,
        }

    return {
        "job": report.get("job"),
        "job_id": report.get("job_id"),
        "status": report.get("status"),
        "runner": report.get("runner"),
        "wall_seconds": None if analysis.wall_seconds is None else round(analysis.wall_seconds, 3),
        "attempts": len(analysis.attempts),
        "attempts_omitted": report.get("attempts_omitted", 0),
        "waves": [
            {
                "step": w.step,
                "wave": w.wave,
                "tasks": w.tasks,
                "attempts": w.attempts,
                "failed": w.failed,
                "start": round(w.start, 3),
                "end": round(w.end, 3),
                "duration": _rounded(w.duration),
                "input_bytes": _rounded(w.input_bytes),
            }
            for w in analysis.waves
        ],
        "stragglers": [
            {
                **attempt_ref(s.attempt),
                "wave_median_seconds": round(s.wave_median, 3),
                "factor": None if s.factor is None else round(s.factor, 2),
                "input_factor": None if s.input_factor is None else round(s.input_factor, 2),
            }
            for s in analysis.stragglers
        ],
        "skew": [
            {
                "step": s.step,
                "largest_partition": s.largest,
                "max_bytes": s.max_bytes,
                "median_bytes": s.median_bytes,
                "ratio": None if s.ratio is None else round(s.ratio, 3),
                "skewed": s.skewed,
                "top_keys": [
                    {
                        "key": k.key,
                        "count": k.count,
                        "share": None if k.share is None else round(k.share, 4),
                    }
                    for k in s.top_keys
                ],
            }
            for s in analysis.skew
        ],
        "failed": [{**attempt_ref(a), "error": a.error} for a in analysis.failed],
        "warnings": [asdict(w) for w in analysis.warnings],
        "cost": {
            "currency": cost.currency,
            "total": cost.total,
            "cpu_use_of_request": cost.cpu_use,
            "memory_use_of_request": cost.memory_use,
            "lines": [asdict(line) for line in cost.lines],
        },
        "totals": report.get("totals"),
        "files": files,
    }
