"""The usage chart: bars drawn as inline SVG on the server (no script), with a text table beside it."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.usage_history import last_days

WIDTH = 560
HEIGHT = 140
BAR_GAP = 4


@dataclass(frozen=True, slots=True)
class Bar:
    day: str
    requests: int
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True, slots=True)
class Chart:
    bars: list[Bar]
    peak: int
    total: int
    width: int = WIDTH
    height: int = HEIGHT


def usage_chart(history: list[tuple[str, int]], *, now: float, days: int) -> Chart:
    """One bar per UTC day of the last ``days`` (days without requests are zero)."""
    counts = dict(history)
    series = [(day, counts.get(day, 0)) for day in last_days(now, days)]
    peak = max((n for _, n in series), default=0)
    slot = WIDTH / len(series)
    bars = []
    for i, (day, n) in enumerate(series):
        height = 0.0 if peak == 0 else max(1.0, (HEIGHT - 2) * n / peak) if n else 0.0
        bars.append(Bar(day, n, i * slot + BAR_GAP / 2, HEIGHT - height, slot - BAR_GAP, height))
    return Chart(bars=bars, peak=peak, total=sum(n for _, n in series))
