"""docs/performance.md from a run's results: the tables a reader compares modes with, the charts, the missed
targets kept in view, and the mode table carried into docs/modes.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import report
from _results import Results, Stat, load

PNG = b"\x89PNG\r\n\x1a\n"


def write_run(run_dir: Path) -> None:
    restart = Results("process", "Process apps", method="From the app's exit to its restarted first line.")
    restart.figure(
        "crash to restart p50",
        [2.0, 3.0, 2.5],
        unit="ms",
        anchor="supervisord",
        anchor_values=[1000.0],
        target_max=20,
        mode="bare",
    )
    restart.figure("agent RSS, 100 apps", 27.5, unit="MiB", target_max=25, mode="bare")
    restart.add_series("plum", "Plum", [2.0, 2.5, 3.0, 4.0])
    restart.add_series("supervisord", "supervisord", [1000.0, 1010.0])
    restart.save(run_dir / "process.json")
    docker = Results("docker", "Container apps")
    docker.figure(
        "crash to restart p50",
        [400.0, 420.0],
        unit="ms",
        anchor="docker --restart=always",
        anchor_values=[500.0],
        mode="hybrid",
    )
    docker.save(run_dir / "docker.json")
    scale = Results("controller_load", "The controller at scale")
    scale.add_curve("p99", "p99", [100, 1000, 10000], [2.0, 4.0, 30.0], "simulated agents", "latency (ms)")
    scale.save(run_dir / "controller_load.json")
    entries = [
        {"name": n, "script": f"{n}.py", "rc": 0, "wall_s": 10.0, "results": True, "error": ""}
        for n in ("process", "docker", "controller_load")
    ]
    entries.append(
        {
            "name": "converge",
            "script": "converge.py",
            "rc": 1,
            "wall_s": 3.0,
            "results": False,
            "error": "lab host did not answer",
        }
    )
    run = {
        "date": "2026-12-02 10:00 UTC",
        "machine": {"CPU": "2 x test"},
        "quick": False,
        "wall_s": 33.0,
        "benchmarks": entries,
    }
    (run_dir / "run.json").write_text(json.dumps(run))


@pytest.fixture
def rendered(tmp_path: Path) -> tuple[Path, str]:
    run_dir, docs = tmp_path / "run", tmp_path / "docs"
    run_dir.mkdir()
    docs.mkdir()
    write_run(run_dir)
    (docs / "modes.md").write_text(
        "# Modes\n\nintro\n\n<!-- bench:modes -->\nold table\n<!-- /bench:modes -->\nafter\n"
    )
    text = report.render(run_dir, docs / "performance.md", docs / "images" / "bench", docs / "modes.md")
    return docs, text


def test_the_modes_sit_side_by_side_with_their_ratios(rendered: tuple[Path, str]) -> None:
    _, text = rendered
    assert "| What | bare | hybrid | containerized |" in text
    row = next(line for line in text.splitlines() if line.startswith("| crash to restart p50 |"))
    assert "2.5 ms (2-3, n=3) (0.0025x supervisord)" in row
    assert "420 ms" not in row and "410 ms (400-420, n=2) (0.82x docker --restart=always)" in row
    assert row.endswith("| - |")  # no containerized figure in this run


def test_a_missed_target_stays_in_the_table_with_the_target(rendered: tuple[Path, str]) -> None:
    _, text = rendered
    row = next(line for line in text.splitlines() if line.startswith("| agent RSS, 100 apps | bare |"))
    assert "27.5 MiB" in row and "<= 25 MiB **missed**" in row


def test_a_failed_benchmark_is_on_the_page(rendered: tuple[Path, str]) -> None:
    _, text = rendered
    assert "| `bench/converge.py` | 3 s | **failed** (exit 1): lab host did not answer |" in text


def test_charts_are_drawn_and_linked(rendered: tuple[Path, str]) -> None:
    docs, text = rendered
    for name in ("process-cdf.png", "controller_load-curve.png"):
        assert (docs / "images" / "bench" / name).read_bytes().startswith(PNG)
    assert not (docs / "images" / "bench" / "docker-cdf.png").exists()  # no samples, no chart
    assert "![Process apps](images/bench/process-cdf.png)" in text
    assert "![The controller at scale](images/bench/controller_load-curve.png)" in text


def test_the_mode_table_replaces_only_its_block_in_modes_md(rendered: tuple[Path, str]) -> None:
    docs, _ = rendered
    doc = (docs / "modes.md").read_text()
    assert "old table" not in doc
    assert doc.startswith("# Modes\n\nintro\n\n<!-- bench:modes -->\n| What | bare | hybrid | containerized |")
    assert doc.endswith("<!-- /bench:modes -->\nafter\n")
    assert "[performance.md](performance.md)" in doc


def test_results_round_trip_through_their_file(tmp_path: Path) -> None:
    res = Results("x", "X")
    res.figure("stop", [5, 7, 6], unit="ms", anchor="systemd", anchor_values=[3, 3], mode="bare")
    res.save(tmp_path / "x.json")
    back = load(tmp_path / "x.json")
    assert back.figures[0].plum == Stat(median=6.0, lo=5.0, hi=7.0, n=3)
    assert back.figures[0].ratio == pytest.approx(2.0)
