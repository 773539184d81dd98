"""What a benchmark hands to the report: figures (with their anchor, ratio and target), raw samples for the
distribution charts, and curves. `make bench` runs each script with `--out FILE`; `bench/report.py` turns the
files into docs/performance.md and its charts.

A figure's values are one number per repeated run (a run's p50, say): the page shows their median and spread.

    results = Results("process_restart", "Crash to restart, process apps", method="...")
    results.figure("crash to restart p50", plum_p50s, unit="ms", anchor="supervisord", anchor_values=sup_p50s,
                   target_max=20, mode="bare")
    results.series("plum", "Plum agent (bare)", all_gaps_ms)
    results.save(args.out)        # also prints the table
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

Number = float | int


@dataclass
class Stat:
    median: float
    lo: float
    hi: float
    n: int

    @classmethod
    def of(cls, values: Number | list[Number]) -> Stat:
        items = [float(v) for v in (values if isinstance(values, list) else [values])]
        if not items:
            raise ValueError("a figure needs at least one value")
        return cls(statistics.median(items), min(items), max(items), len(items))


@dataclass
class Figure:
    what: str
    unit: str
    plum: Stat
    subject: str = "Plum"
    anchor: str | None = None
    anchor_stat: Stat | None = None
    target_max: float | None = None
    target: str | None = None
    met: bool | None = None
    mode: str | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.anchor_stat is None or self.anchor_stat.median == 0:
            return None
        return self.plum.median / self.anchor_stat.median


@dataclass
class Series:
    label: str
    unit: str
    values: list[float]


@dataclass
class Curve:
    label: str
    x: list[float]
    y: list[float]


@dataclass
class Results:
    name: str
    title: str
    method: str = ""
    figures: list[Figure] = field(default_factory=list)
    series: dict[str, Series] = field(default_factory=dict)
    curves: dict[str, Curve] = field(default_factory=dict)
    axes: dict[str, str] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def figure(
        self,
        what: str,
        values: Number | list[Number],
        *,
        unit: str,
        subject: str = "Plum",
        anchor: str | None = None,
        anchor_values: Number | list[Number] | None = None,
        target_max: float | None = None,
        target: str | None = None,
        mode: str | None = None,
        note: str = "",
    ) -> Figure:
        """One row. `target_max` is checked against the median; `target` is free text for other targets
        (then met is left unknown unless the caller sets it on the returned figure)."""
        plum = Stat.of(values)
        fig = Figure(
            what=what,
            unit=unit,
            plum=plum,
            subject=subject,
            anchor=anchor,
            anchor_stat=Stat.of(anchor_values) if anchor_values is not None else None,
            target_max=target_max,
            target=target if target is not None else (f"<= {target_max:g} {unit}" if target_max is not None else None),
            met=(plum.median <= target_max) if target_max is not None else None,
            mode=mode,
            note=note,
        )
        self.figures.append(fig)
        return fig

    def add_series(self, key: str, label: str, values: list[float], unit: str = "ms") -> None:
        """Raw samples of one distribution (the report draws their CDF, one chart per benchmark)."""
        self.series[key] = Series(label, unit, [float(v) for v in values])

    def add_curve(self, key: str, label: str, x: list[float], y: list[float], xlabel: str, ylabel: str) -> None:
        """A line (the report draws all of a benchmark's curves on one chart with these axis labels)."""
        self.curves[key] = Curve(label, [float(v) for v in x], [float(v) for v in y])
        self.axes = {"x": xlabel, "y": ylabel}

    def save(self, out: str | Path | None) -> None:
        self.print()
        if out:
            Path(out).write_text(json.dumps(asdict(self), indent=1) + "\n")

    def print(self) -> None:
        print(f"\n== {self.title}")
        for fig in self.figures:
            line = f"  {fig.mode + ': ' if fig.mode else ''}{fig.what}: {fmt(fig.plum, fig.unit)}"
            if fig.anchor_stat is not None:
                line += f" | {fig.anchor}: {fmt(fig.anchor_stat, fig.unit)}"
                if fig.ratio is not None:
                    line += f" | ratio {ratio_text(fig.ratio)}"
            if fig.target:
                line += f" | target {fig.target}{'' if fig.met is None else (' met' if fig.met else ' MISSED')}"
            print(line)
        for key, value in self.facts.items():
            print(f"  {key}: {value}")


def fmt(stat: Stat, unit: str) -> str:
    def num(v: float) -> str:
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"

    shown = f"{num(stat.median)} {unit}".rstrip()
    if stat.n > 1 and stat.hi != stat.lo:
        shown += f" ({num(stat.lo)}-{num(stat.hi)}, n={stat.n})"
    return shown


def ratio_text(ratio: float) -> str:
    """Two decimals, or two significant digits for a ratio far below 1 (0.0028, not 0.00)."""
    return f"{ratio:.2g}" if ratio < 0.1 else f"{ratio:.2f}"


def load(path: str | Path) -> Results:
    raw = json.loads(Path(path).read_text())
    figures = []
    for f in raw.get("figures", []):
        f["plum"] = Stat(**f["plum"])
        f["anchor_stat"] = Stat(**f["anchor_stat"]) if f.get("anchor_stat") else None
        figures.append(Figure(**f))
    return Results(
        name=raw["name"],
        title=raw["title"],
        method=raw.get("method", ""),
        figures=figures,
        series={k: Series(**v) for k, v in raw.get("series", {}).items()},
        curves={k: Curve(**v) for k, v in raw.get("curves", {}).items()},
        axes=raw.get("axes", {}),
        facts=raw.get("facts", {}),
        notes=raw.get("notes", []),
    )
