"""`make bench`: every benchmark under bench/, one after the other on this machine, then docs/performance.md.

    python bench/run.py                    # everything (about 25 minutes), writes docs/performance.md
    python bench/run.py --only process     # one benchmark; its page goes to .run/bench/performance.md
    python bench/run.py --quick            # small sizes, for a smoke run (page in .run/bench too)

Each script writes its results to .run/bench/<name>.json and its output to .run/bench/<name>.log. A script that
fails or overruns its time limit is reported on the page and makes the run exit non-zero; the others still run.
Benchmarks run alone: anything else on the machine shows up in the figures.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import report

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"


@dataclass(frozen=True)
class Benchmark:
    name: str
    limit_s: int  # the script's budget: it is stopped past this and reported as failed


# In this order: the per-mode runtime figures first, the lab (which builds its own hosts) last.
BENCHMARKS = (
    Benchmark("process", 480),
    Benchmark("docker_modes", 720),
    Benchmark("agent_list", 120),
    Benchmark("fleet", 180),
    Benchmark("controller_load", 420),
    Benchmark("converge", 600),
)


def machine() -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor() or "unknown",
    )
    mem_kib = int(
        next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in line)
    )
    os_name = next(
        (
            line.split("=", 1)[1].strip('"')
            for line in Path("/etc/os-release").read_text().splitlines()
            if line.startswith("PRETTY_NAME")
        ),
        "unknown",
    )
    docker = shutil.which("docker")
    engine = (
        subprocess.run(
            [docker, "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if docker
        else ""
    )
    return {
        "CPU": f"{os.cpu_count()} x {cpu}",
        "memory": f"{mem_kib / 2**20:.1f} GiB",
        "system": f"{os_name}, Linux {platform.release()}",
        "Python": platform.python_version(),
        "Docker engine": engine or "not running",
    }


def run_one(bench: Benchmark, out_dir: Path, quick: bool) -> dict[str, Any]:
    results = out_dir / f"{bench.name}.json"
    results.unlink(missing_ok=True)
    command = [sys.executable, str(BENCH / f"{bench.name}.py"), "--out", str(results), *(["--quick"] if quick else [])]
    print(f"\n### bench/{bench.name}.py (limit {bench.limit_s} s)", flush=True)
    started = time.monotonic()
    error = ""
    with (out_dir / f"{bench.name}.log").open("w") as log:
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:  # shown live and kept
            sys.stdout.write(line)
            log.write(line)
            if time.monotonic() - started > bench.limit_s:
                proc.kill()
                error = f"stopped after its {bench.limit_s} s limit"
                break
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
    if rc != 0 and not error:
        tail = (out_dir / f"{bench.name}.log").read_text().strip().splitlines()[-1:]
        error = tail[0][:200] if tail else "no output"
    return {
        "name": bench.name,
        "script": f"{bench.name}.py",
        "rc": rc or (1 if error else 0),
        "wall_s": time.monotonic() - started,
        "results": results.exists(),
        "error": error,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=[b.name for b in BENCHMARKS], help="run only these")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--out-dir", type=Path, default=REPO / ".run" / "bench")
    parser.add_argument("--page", type=Path, help="default: docs/performance.md for a full run, else in --out-dir")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    chosen = [b for b in BENCHMARKS if not args.only or b.name in args.only]
    started = time.monotonic()
    run: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "quick": args.quick,
        "benchmarks": [],
    }
    for bench in chosen:
        run["benchmarks"].append(run_one(bench, args.out_dir, args.quick))
        run["wall_s"] = time.monotonic() - started
        (args.out_dir / "run.json").write_text(json.dumps(run, indent=1) + "\n")
    if args.quick:
        run["machine"]["note"] = "a --quick smoke run: small sizes, not the published figures"
        (args.out_dir / "run.json").write_text(json.dumps(run, indent=1) + "\n")
    published = REPO / "docs" / "performance.md"
    page = (args.page or (args.out_dir / "performance.md" if args.only or args.quick else published)).resolve()
    modes_doc = REPO / "docs" / "modes.md" if page == published else None
    report.render(args.out_dir, page, page.parent / "images" / "bench", modes_doc)
    failed = [entry["name"] for entry in run["benchmarks"] if entry["rc"] != 0]
    print(f"\nwrote {page} in {run['wall_s'] / 60:.1f} min" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
