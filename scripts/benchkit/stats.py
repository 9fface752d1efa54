"""Small statistics: token rates from arrival times, percentiles, median with spread."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any


def rate(times: list[float]) -> float:
    """Decode rate from token arrival times: tokens after the first over the time they took."""
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1); no interpolation, so it is a value seen."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass(frozen=True)
class Spread:
    """Median of repeated runs with their min and max (what the tables print)."""

    median: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values), len(values))

    def scaled(self, factor: float) -> Spread:
        return Spread(self.median * factor, self.min * factor, self.max * factor, self.n)

    def text(self, digits: int = 1) -> str:
        return f"{self.median:.{digits}f} [{self.min:.{digits}f}-{self.max:.{digits}f}]"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
