"""Prometheus text exposition (format 0.0.4): label escaping, metric families and a latency histogram."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds: from a cached read (well under a millisecond) to an upload of a large artifact.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Labels = Mapping[str, object]
Sample = tuple[Labels, float]


def escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def series(name: str, labels: Labels) -> str:
    if not labels:
        return name
    return name + "{" + ",".join(f'{key}="{escape(value)}"' for key, value in labels.items()) + "}"


def number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def family(name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> list[str]:
    """One metric family: its HELP and TYPE lines, then a line per sample."""
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{series(name, labels)} {number(value)}" for labels, value in samples]
    return lines


class Histogram:
    """Cumulative buckets per label set, as Prometheus histograms are exposed (_bucket, _sum, _count)."""

    def __init__(self, name: str, help_text: str, label_names: Sequence[str], buckets: Sequence[float]) -> None:
        self.name = name
        self.help_text = help_text
        self.label_names = tuple(label_names)
        self.buckets = tuple(sorted(buckets))
        self._counts: dict[tuple[str, ...], list[int]] = {}  # per label set: one count per bucket, then +Inf
        self._sums: dict[tuple[str, ...], float] = {}

    def observe(self, label_values: Sequence[str], value: float) -> None:
        key = tuple(label_values)
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = [0] * (len(self.buckets) + 1)
            self._sums[key] = 0.0
        counts[bisect.bisect_left(self.buckets, value)] += 1
        self._sums[key] += value

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} histogram"]
        for key in sorted(self._counts):
            labels = dict(zip(self.label_names, key))
            running = 0
            for bound, count in zip((*self.buckets, float("inf")), self._counts[key]):
                running += count
                le = "+Inf" if bound == float("inf") else number(bound)
                lines.append(f"{series(self.name + '_bucket', {**labels, 'le': le})} {running}")
            lines.append(f"{series(self.name + '_sum', labels)} {number(self._sums[key])}")
            lines.append(f"{series(self.name + '_count', labels)} {running}")
        return lines
