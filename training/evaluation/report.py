"""The evaluation report: one self-contained HTML page (plots as inline SVG, images as
data URLs), readable offline and from an S3 console download.

Loss curves come from the artifact's training `history`, metrics are drawn beside their
baselines, generated images as a grid, melodies as a piano roll.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Callable, Sequence
from typing import Any

from training.evaluation.results import (
    BASELINES,
    LOWER_IS_BETTER,
    Evaluation,
    Table,
    verdicts,
)

W, H, PAD = 560, 240, 40
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _esc(value: Any) -> str:
    return html.escape(str(value))


def line_chart(series: dict[str, list[tuple[float, float]]], *, title: str,
               x_label: str = "step") -> str:
    """Lines of (x, y) points on shared axes, as an SVG element."""
    points = [p for line in series.values() for p in line if math.isfinite(p[1])]
    if not points:
        return ""
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def sx(x: float) -> float:
        return PAD + (x - x0) / (x1 - x0) * (W - 2 * PAD)

    def sy(y: float) -> float:
        return H - PAD + (y - y0) / (y1 - y0) * -(H - 2 * PAD)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
             f'role="img" aria-label="{_esc(title)}">',
             f'<text x="{W / 2}" y="16" text-anchor="middle" font-size="13">{_esc(title)}</text>',
             f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#999"/>',
             f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="#999"/>',
             f'<text x="{PAD}" y="{H - PAD + 14}" font-size="10">{x0:g}</text>',
             f'<text x="{W - PAD}" y="{H - PAD + 14}" font-size="10" '
             f'text-anchor="end">{_esc(x_label)} {x1:g}</text>',
             f'<text x="{PAD - 4}" y="{PAD + 4}" font-size="10" text-anchor="end">{y1:.3g}</text>',
             f'<text x="{PAD - 4}" y="{H - PAD}" font-size="10" text-anchor="end">{y0:.3g}</text>']
    for i, (name, line) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        finite = [p for p in line if math.isfinite(p[1])]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in finite)
        parts.append(f'<polyline class="series" data-name="{_esc(name)}" fill="none" '
                     f'stroke="{colour}" stroke-width="1.5" points="{path}"/>')
        if len(finite) == 1:
            x, y = finite[0]
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}"/>')
        parts.append(f'<text x="{W - PAD + 2}" y="{PAD + 14 * i}" font-size="10" '
                     f'fill="{colour}">{_esc(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(values: dict[str, float], *, title: str) -> str:
    """Horizontal bars: a metric and its baselines on one scale."""
    if not values:
        return ""
    top = max(abs(v) for v in values.values()) or 1.0
    row = 22
    height = 28 + row * len(values)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" '
             f'role="img" aria-label="{_esc(title)}">',
             f'<text x="4" y="14" font-size="13">{_esc(title)}</text>']
    for i, (name, value) in enumerate(values.items()):
        y = 22 + i * row
        width = abs(value) / top * (W - 260)
        colour = COLOURS[0] if i == 0 else "#bbb"
        parts.append(f'<text x="4" y="{y + 13}" font-size="11">{_esc(name)}</text>'
                     f'<rect class="bar" data-name="{_esc(name)}" x="180" y="{y}" '
                     f'width="{width:.1f}" height="16" fill="{colour}"/>'
                     f'<text x="{184 + width:.1f}" y="{y + 13}" font-size="11">{value:.4g}</text>')
    parts.append("</svg>")
    return "".join(parts)


def piano_roll(notes: Sequence[Any], primer_length: int, *, title: str) -> str:
    """Notes as bars on a pitch/time grid; the primer grey, the continuation coloured."""
    pitched = [n.pitch for n in notes if n.pitch is not None]
    if not pitched:
        return ""
    low, high = min(pitched) - 1, max(pitched) + 1
    total = sum(n.duration for n in notes) or 1.0
    row = max(3.0, min(8.0, (H - 2 * PAD) / (high - low + 1)))
    height = PAD + row * (high - low + 1) + 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height:.0f}" '
             f'role="img" aria-label="{_esc(title)}">',
             f'<text x="4" y="14" font-size="13">{_esc(title)}</text>']
    t = 0.0
    for i, note in enumerate(notes):
        if note.pitch is not None:
            x = 30 + t / total * (W - 40)
            y = PAD + (high - note.pitch) * row
            colour = "#999" if i < primer_length else COLOURS[0]
            parts.append(f'<rect class="note" x="{x:.1f}" y="{y:.1f}" '
                         f'width="{max(1.0, note.duration / total * (W - 40)):.1f}" '
                         f'height="{row - 1:.1f}" fill="{colour}"/>')
        t += note.duration
    parts.append(f'<text x="2" y="{PAD + row:.0f}" font-size="9">{high}</text>'
                 f'<text x="2" y="{height - 10:.0f}" font-size="9">{low}</text></svg>')
    return "".join(parts)


#: The curves drawn from a training history: a title and which logged names it shows.
CURVES: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("loss by training step", lambda name: name.endswith("loss")),
    ("mean episode reward by training step", lambda name: name == "episode_reward"),
    ("lap time (s) by training step",
     lambda name: name in ("val_lap_time", "val_heldout_lap_time")),
)


def _curves(history: list[dict[str, float]]) -> str:
    charts = []
    for title, shown in CURVES:
        names = sorted({k for row in history for k in row if shown(k)})
        series = {n: [(row["step"], row[n]) for row in history if n in row] for n in names}
        if series:
            charts.append(line_chart(series, title=title))
    return "".join(charts)


def _table(table: Table) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in table.header)
    rows = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>"
                   for row in table.rows)
    return f"<h2>{_esc(table.title)}</h2><table><tr>{head}</tr>{rows}</table>"


def render_report(evaluation: Evaluation) -> str:
    metrics = evaluation.metrics
    rows = []
    for name, entry in metrics.items():
        std = entry.get("standard_deviation")
        better = "lower" if name in LOWER_IS_BETTER else ""
        rows.append(f"<tr><td>{_esc(name)}</td><td>{entry['value']:.5g}</td>"
                    f"<td>{'' if std is None else f'± {std:.3g}'}</td><td>{better}</td></tr>")
    sections = [f"<h1>genkiln evaluation: {_esc(evaluation.family)}</h1>",
                f"<p>measured: <code>{_esc(evaluation.measured)}</code></p>",
                "<h2>Metrics</h2><table><tr><th>metric</th><th>value</th>"
                "<th>spread</th><th>better</th></tr>" + "".join(rows) + "</table>"]
    charts = []
    for metric, baselines in BASELINES.items():
        if metric in metrics:
            shown = {metric: metrics[metric]["value"]}
            shown.update({b: metrics[b]["value"] for b in baselines if b in metrics})
            if len(shown) > 1:
                charts.append(bar_chart(shown, title=f"{metric} against its baselines"))
    behind = verdicts(metrics)
    if charts or behind:
        said = ("<ul>" + "".join(f'<li class="behind">{_esc(v)}</li>' for v in behind)
                + "</ul>") if behind else ""
        sections.append("<h2>Against the baselines</h2>" + said + "".join(charts))
    sections.extend(_table(t) for t in evaluation.tables)
    sections.extend(line_chart(series, title=title, x_label="")
                    for title, series in evaluation.curves.items())
    curves = _curves(evaluation.history)
    sections.append("<h2>Training</h2>" + (curves or "<p>no training history in this "
                                                     "artifact</p>"))
    if evaluation.grid_png:
        data = base64.b64encode(evaluation.grid_png).decode("ascii")
        sections.append(f'<h2>Samples</h2><img alt="sample grid" '
                        f'src="data:image/png;base64,{data}" style="image-rendering:pixelated">')
    for caption, png in evaluation.pictures:
        data = base64.b64encode(png).decode("ascii")
        sections.append(f'<figure><img alt="{_esc(caption)}" src="data:image/png;base64,'
                        f'{data}" style="max-width:100%"><figcaption>{_esc(caption)}'
                        f'</figcaption></figure>')
    if evaluation.texts:
        items = "".join(f"<li><b>{_esc(p)}</b>{_esc(t)}</li>" for p, t in evaluation.texts)
        sections.append(f"<h2>Samples</h2><ol>{items}</ol>")
    if evaluation.melodies:
        rolls = [piano_roll([*p, *c], len(p), title=f"melody {i + 1}: primer (grey), "
                            f"continuation") for i, (p, c) in enumerate(evaluation.melodies)]
        sections.append("<h2>Piano roll</h2>" + "".join(rolls))
    if evaluation.lineage:
        sections.append("<h2>Lineage</h2><pre>" + _esc(evaluation.lineage) + "</pre>")
    if evaluation.notes:
        sections.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_esc(n)}</li>"
                                                       for n in evaluation.notes) + "</ul>")
    style = ("body{font-family:sans-serif;max-width:760px;margin:2em auto}"
             "td,th{padding:2px 10px;text-align:left}svg{display:block;margin:8px 0}")
    return ("<!doctype html><html><head><meta charset=\"utf-8\"><title>genkiln evaluation"
            f"</title><style>{style}</style></head><body>" + "".join(sections)
            + "</body></html>\n")
