"""Chart geometry for the report's inline SVG: numbers in, coordinates out, no markup.

The templates (``macros.html.j2``) turn these into ``<svg>`` elements, so every label goes
through Jinja's autoescaping like any other text, and the charts need no script and no
library: they render without JavaScript, print, and carry nothing from elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from scmwatch.alerts import LEVELS

STACK_ORDER = tuple(reversed(LEVELS))  # critical at the bottom of each bar


@dataclass
class Bar:
    x: float
    y: float
    w: float
    h: float
    level: str
    count: int
    start: datetime


@dataclass
class Timeline:
    width: int
    height: int
    left: int
    bottom: int
    top: int
    bars: list[Bar]
    ymax: int
    start: datetime | None
    end: datetime | None
    levels: list[str]


def timeline(buckets: list[tuple[datetime, dict[str, int]]], width: int = 900, height: int = 200) -> Timeline:
    """Stacked bars per time bucket, one segment per level."""
    left, top, bottom = 44, 10, 28
    plot_w, plot_h = width - left - 10, height - top - bottom
    ymax = max((sum(c.values()) for _, c in buckets), default=0)
    bars: list[Bar] = []
    levels_seen: list[str] = []
    if buckets and ymax:
        bw = plot_w / len(buckets)
        for i, (start, counts) in enumerate(buckets):
            y = top + plot_h
            for level in STACK_ORDER:
                n = counts.get(level, 0)
                if not n:
                    continue
                if level not in levels_seen:
                    levels_seen.append(level)
                h = max(plot_h * n / ymax, 1.0)
                y -= h
                bars.append(Bar(round(left + i * bw + 1, 1), round(y, 1), round(max(bw - 2, 1), 1),
                                round(h, 1), level, n, start))
    return Timeline(width, height, left, bottom, top, bars, ymax,
                    buckets[0][0] if buckets else None, buckets[-1][0] if buckets else None,
                    [lv for lv in STACK_ORDER if lv in levels_seen])


@dataclass
class Node:
    name: str
    x: float
    y: float
    alerts: int
    level: str | None
    lx: float = 0.0  # label position: outside the circle, so arrows do not cross it
    ly: float = 0.0
    anchor: str = "middle"


@dataclass
class Edge:
    x1: float
    y1: float
    x2: float
    y2: float
    lx: float
    ly: float
    source: str
    target: str
    alerts: int
    first_seen: Any
    last_seen: Any


@dataclass
class Graph:
    size: int
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    hidden_nodes: int = 0


NODE_R = 9


def graph(edges: list[dict[str, Any]], hosts: list[dict[str, Any]], max_nodes: int = 40,
          size: int = 660) -> Graph:
    """Hosts on a circle, edges as chords: sources only first (clockwise from the top), then hosts
    that are both, then targets only, so the arrows mostly cross the circle one way; the most
    connected hosts are kept when there are more than ``max_nodes``."""
    degree: dict[str, int] = {}
    out_deg: dict[str, int] = {}
    in_deg: dict[str, int] = {}
    for e in edges:
        s_, t_ = e["source_host"], e["target_host"]
        out_deg[s_] = out_deg.get(s_, 0) + 1
        in_deg[t_] = in_deg.get(t_, 0) + 1
        for h in (s_, t_):
            degree[h] = degree.get(h, 0) + e["alerts"]
    kept = set(sorted(degree, key=lambda h: (-degree[h], h))[:max_nodes])

    def role(h: str) -> int:
        return 0 if not in_deg.get(h) else 2 if not out_deg.get(h) else 1

    shown = sorted(kept, key=lambda h: (role(h), -degree[h], h))
    info = {h["host"]: h for h in hosts}
    g = Graph(size, hidden_nodes=len(degree) - len(shown))
    if not shown:
        return g
    c = size / 2
    r = c - 150 if len(shown) > 1 else 0  # room for the labels outside
    pos: dict[str, tuple[float, float]] = {}
    for i, name in enumerate(shown):
        a = 2 * math.pi * i / len(shown) - math.pi / 2
        ca, sa = math.cos(a), math.sin(a)
        x, y = round(c + r * ca, 1), round(c + r * sa, 1)
        pos[name] = (x, y)
        h = info.get(name, {})
        rank = h.get("max_level_rank")
        anchor = "middle" if abs(ca) < 0.3 else "start" if ca > 0 else "end"
        g.nodes.append(Node(name, x, y, h.get("alerts") or 0, LEVELS[rank] if rank is not None else None,
                            round(x + 15 * ca, 1), round(y + 15 * sa + 4, 1), anchor))
    for e in edges:
        s, t = e["source_host"], e["target_host"]
        if s not in pos or t not in pos or s == t:
            continue
        (x1, y1), (x2, y2) = pos[s], pos[t]
        d = math.hypot(x2 - x1, y2 - y1) or 1.0
        ux, uy = (x2 - x1) / d, (y2 - y1) / d
        # bend the label off the chord a little so A->B and B->A labels do not overlap
        lx, ly = (x1 + x2) / 2 - uy * 8, (y1 + y2) / 2 + ux * 8
        g.edges.append(Edge(round(x1 + ux * NODE_R, 1), round(y1 + uy * NODE_R, 1),
                            round(x2 - ux * (NODE_R + 4), 1), round(y2 - uy * (NODE_R + 4), 1),
                            round(lx, 1), round(ly, 1), s, t, e["alerts"], e["first_seen"], e["last_seen"]))
    return g


def heat(n: int, peak: int) -> int:
    """0..5: the shade class of a matrix cell (log scale, so one busy rule does not flatten the rest)."""
    if n <= 0 or peak <= 0:
        return 0
    return 1 + min(4, int(4 * math.log1p(n) / math.log1p(peak)))


@dataclass
class Tick:
    x: float
    y: float
    w: float
    h: float
    count: int
    start: datetime


@dataclass
class Lane:
    label: str
    y: float
    total: int
    ticks: list[Tick]


@dataclass
class Lanes:
    width: int
    height: int
    left: int
    lanes: list[Lane]
    start: datetime | None
    end: datetime | None


def lanes(series: list[tuple[str, dict[int, int]]], starts: list[datetime], width: int = 900,
          lane_h: int = 28) -> Lanes:
    """One row per kind of activity on a shared time axis: per time bucket a bar whose height
    grows with the log of its count, so one logon storm does not hide a single service install."""
    left, right, top = 170, 10, 6
    plot_w = width - left - right
    n = max(len(starts), 1)
    bw = plot_w / n
    peak = max((c for _, counts in series for c in counts.values()), default=0)
    out: list[Lane] = []
    for i, (label, counts) in enumerate(series):
        base = top + (i + 1) * lane_h - 4
        ticks = []
        for b, c in sorted(counts.items()):
            h = 3 + (lane_h - 9) * math.log1p(c) / math.log1p(peak) if peak else 0
            ticks.append(Tick(round(left + b * bw, 1), round(base - h, 1), round(max(bw - 1, 1), 1),
                              round(h, 1), c, starts[b]))
        out.append(Lane(label, base, sum(counts.values()), ticks))
    return Lanes(width, top + len(series) * lane_h + 22, left, out,
                 starts[0] if starts else None, starts[-1] if starts else None)
