"""The bulletin's charts as inline SVG (no plotting library in the page: it prints the same in every browser and
in the PDF)."""

from __future__ import annotations

import html


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def bar_chart(items: list[tuple[str, float | None]], title: str) -> str:
    """Horizontal bars (0–100 %), one per item, as inline SVG."""
    rows = [(label, v) for label, v in items if v is not None]
    width, left, bar_h, gap = 640, 150, 14, 5
    height = 30 + len(rows) * (bar_h + gap) + 20
    out = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="100%" viewBox="0 0 {width} {height}"'
           f' role="img" aria-label="{_e(title)}">',
           f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13" font-weight="600">{_e(title)}</text>']
    span = width - left - 60
    for i, (label, v) in enumerate(rows):
        y = 28 + i * (bar_h + gap)
        w = max(0.0, min(1.0, float(v or 0))) * span
        colour = "#0a6b2e" if (v or 0) >= 0.9 else "#2f6f9f" if (v or 0) >= 0.75 else "#b35900" \
            if (v or 0) >= 0.6 else "#b00000"
        out.append(f'<text x="{left - 6}" y="{y + bar_h - 3}" text-anchor="end" font-size="11">{_e(label)}</text>')
        out.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}"/>')
        out.append(f'<text x="{left + w + 4:.1f}" y="{y + bar_h - 3}" font-size="10">{float(v or 0) * 100:.1f}%'
                   '</text>')
    for pct in (0, 50, 100):
        x = left + span * pct / 100
        out.append(f'<line x1="{x}" y1="24" x2="{x}" y2="{height - 16}" stroke="#bbb" stroke-dasharray="2,2"/>')
        out.append(f'<text x="{x}" y="{height - 4}" text-anchor="middle" font-size="9">{pct}%</text>')
    out.append("</svg>")
    return "".join(out)


def daily_chart(daily: list[tuple[str, int, int]], title: str) -> str:
    """Columns of cases filed per day, with the cases closed per day as a line, as inline SVG."""
    width, height, left, bottom, top_ = 640, 220, 40, 30, 28
    peak = max([max(f, c) for _, f, c in daily] + [1])
    n = max(1, len(daily))
    step = (width - left - 10) / n
    plot_h = height - bottom - top_
    out = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="100%" viewBox="0 0 {width} {height}"'
           f' role="img" aria-label="{_e(title)}">',
           f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13" font-weight="600">{_e(title)}</text>']
    for frac in (0, 0.5, 1):
        y = top_ + plot_h * (1 - frac)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 4}" y="{y + 3:.1f}" text-anchor="end" font-size="9">{round(peak * frac)}</text>')
    pts = []
    for i, (day, filed, closed) in enumerate(daily):
        x = left + i * step
        h = plot_h * filed / peak
        out.append(f'<rect x="{x + 1:.1f}" y="{top_ + plot_h - h:.1f}" width="{max(1.0, step - 2):.1f}" '
                   f'height="{h:.1f}" fill="#9bb7d4"/>')
        pts.append(f"{x + step / 2:.1f},{top_ + plot_h * (1 - closed / peak):.1f}")
        if i % 5 == 0 or i == len(daily) - 1:
            out.append(f'<text x="{x + step / 2:.1f}" y="{height - bottom + 12}" text-anchor="middle" '
                       f'font-size="9">{day[5:]}</text>')
    if pts:
        out.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="#b00000" stroke-width="1.5"/>')
    out.append(f'<rect x="{width - 190}" y="{height - 14}" width="10" height="8" fill="#9bb7d4"/>'
               f'<text x="{width - 176}" y="{height - 7}" font-size="9">立案数</text>'
               f'<line x1="{width - 120}" y1="{height - 10}" x2="{width - 106}" y2="{height - 10}" '
               f'stroke="#b00000" stroke-width="1.5"/><text x="{width - 102}" y="{height - 7}" font-size="9">结案数'
               '（按结案日）</text>')
    out.append("</svg>")
    return "".join(out)
