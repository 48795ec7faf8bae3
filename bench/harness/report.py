"""Markdown tables, SVG charts and splicing generated sections into `docs/benchmarks.md`."""

from __future__ import annotations

import math
import re
from html import escape
from typing import Sequence

PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f"]


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """A GitHub Markdown table. `align` has one letter per column: `l`, `r` or `c`."""
    if align is not None and len(align) != len(headers):
        raise ValueError(f"`align` has {len(align)} letters for {len(headers)} columns")
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"A row has {len(row)} cells for {len(headers)} columns: {row!r}")
    rule = {"l": ":---", "r": "---:", "c": ":---:"}

    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |"]
    lines.append("|" + "|".join(rule[a] for a in (align or "l" * len(headers))) + "|")
    lines.extend("| " + " | ".join(cell(v) for v in row) + " |" for row in rows)
    return "\n".join(lines)


def _nice_ticks(hi: float, log: bool, lo_positive: float) -> list[float]:
    if log:
        first = math.floor(math.log10(lo_positive))
        last = math.ceil(math.log10(hi))
        return [10.0**e for e in range(first, last + 1)]
    if hi <= 0:
        return [0.0, 1.0]
    step = 10 ** math.floor(math.log10(hi))
    for mult in (1, 2, 5, 10):
        if hi / (step * mult) <= 6:
            step *= mult
            break
    ticks = []
    t = 0.0
    while t < hi + step * 0.999:
        ticks.append(t)
        t += step
    return ticks


def _tick_label(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def svg_grouped_bars(
    title: str,
    unit: str,
    groups: Sequence[tuple[str, Sequence[tuple[str, float, float | None]]]],
    *,
    log: bool = False,
    width: int = 760,
) -> str:
    """A horizontal grouped bar chart as a standalone SVG document.

    `groups` is a list of `(group label, bars)`; each bar is `(series name, value, error)`, where
    `error` (a standard deviation, or `None`) is drawn as a whisker. Series get one colour each,
    shown in a legend. With `log`, the axis is logarithmic (values must be positive).
    """
    series: list[str] = []
    for _, bars in groups:
        for name, _, _ in bars:
            if name not in series:
                series.append(name)
    colour = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(series)}
    values = [v for _, bars in groups for _, v, _ in bars]
    if not values:
        raise ValueError("A chart needs at least one bar")
    if log and min(values) <= 0:
        raise ValueError("A logarithmic chart needs positive values")
    hi = max(v + (e or 0) for _, bars in groups for _, v, e in bars)
    lo_pos = min(values)
    ticks = _nice_ticks(hi, log, lo_pos)
    axis_lo, axis_hi = (ticks[0], ticks[-1]) if log else (0.0, ticks[-1])

    left, right, bar_h, gap, group_gap = 230, 70, 16, 3, 14
    legend_rows = math.ceil(len(series) / 3)
    top = 40 + 18 * legend_rows
    plot_w = width - left - right

    def x_of(v: float) -> float:
        if log:
            v = max(v, axis_lo)
            return left + plot_w * (math.log10(v) - math.log10(axis_lo)) / (math.log10(axis_hi) - math.log10(axis_lo))
        return left + plot_w * (v - axis_lo) / (axis_hi - axis_lo)

    out: list[str] = []
    y = top
    for label, bars in groups:
        group_top = y
        for name, v, err in bars:
            x0 = x_of(axis_lo)
            x1 = x_of(v)
            out.append(
                f'<rect x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 0.5):.1f}" height="{bar_h}" '
                f'fill="{colour[name]}"><title>{escape(name)}: {v:g} {escape(unit)}</title></rect>'
            )
            if err:
                xa, xb = x_of(max(v - err, axis_lo if log else 0.0)), x_of(v + err)
                cy = y + bar_h / 2
                out.append(f'<line x1="{xa:.1f}" y1="{cy}" x2="{xb:.1f}" y2="{cy}" stroke="#333" stroke-width="1"/>')
            out.append(
                f'<text x="{x1 + 4:.1f}" y="{y + bar_h - 4}" font-size="11">{escape(_tick_label_value(v))}</text>'
            )
            y += bar_h + gap
        mid = (group_top + y - gap) / 2
        out.append(
            f'<text x="{left - 8}" y="{mid + 4:.1f}" font-size="12" text-anchor="end">{escape(label)}</text>'
        )
        y += group_gap
    height = y + 30
    axis: list[str] = []
    for t in ticks:
        x = x_of(t)
        axis.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{y - group_gap}" stroke="#ddd"/>')
        axis.append(
            f'<text x="{x:.1f}" y="{y - group_gap + 16}" font-size="11" text-anchor="middle">{_tick_label(t)}</text>'
        )
    legend: list[str] = []
    for i, name in enumerate(series):
        lx = left + (i % 3) * (plot_w // 3)
        ly = 30 + 18 * (i // 3)
        legend.append(f'<rect x="{lx}" y="{ly}" width="12" height="12" fill="{colour[name]}"/>')
        legend.append(f'<text x="{lx + 16}" y="{ly + 10}" font-size="12">{escape(name)}</text>')
    scale = " (log scale)" if log else ""
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="18" font-size="14" font-weight="bold" text-anchor="middle">'
        f"{escape(title)}</text>",
        *legend,
        *axis,
        *out,
        f'<text x="{left + plot_w / 2}" y="{height - 4}" font-size="11" text-anchor="middle">'
        f"{escape(unit)}{scale}</text>",
        "</svg>",
    ]
    return "\n".join(parts) + "\n"


def _tick_label_value(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def splice(document: str, name: str, content: str) -> str:
    """Replaces the text between `<!-- bench:NAME:start -->` and `<!-- bench:NAME:end -->`.

    The markers are kept; when they are missing, a marked section is appended at the end.
    """
    start = f"<!-- bench:{name}:start -->"
    end = f"<!-- bench:{name}:end -->"
    block = f"{start}\n{content.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(document):
        return pattern.sub(lambda _: block, document, count=1)
    return document.rstrip("\n") + "\n\n" + block + "\n"
