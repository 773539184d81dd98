"""GET /v1/apps with 200 apps: latency of the full status list (state, CPU and memory of every app).

Anchor, same run: supervisord's own status call (`getAllProcessInfo` over its XML-RPC socket, one connection
kept, as supervisorctl does without its start-up) for the same 200 programs."""

from __future__ import annotations

import argparse
import time
import xmlrpc.client

from supervisor.xmlrpc import SupervisorTransport

from _common import Agent, Supervisord, make_zip, percentile, workdir
from _results import Results

SCRIPT = "#!/bin/sh\nexec sleep 100000\n"


def timed(call, count: int) -> list[float]:
    out = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        out.append((time.perf_counter() - started) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--apps", type=int, default=200)
    parser.add_argument("--requests", type=int, default=30, help="per batch")
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.quick:
        args.apps, args.requests, args.batches = 20, 5, 1
    root = workdir("list")
    agent = Agent(root / "agent").start()
    artifact = make_zip(root / "a.zip", {"start.sh": (SCRIPT, 0o755), "meta.ini": "name=a\nversion=1\n"})

    def listing() -> None:
        assert len(agent.request("GET", "/v1/apps")["apps"]) == args.apps

    try:
        for i in range(args.apps):
            agent.deploy(f"app{i}", artifact)
        plum = [timed(listing, args.requests) for _ in range(args.batches)]
        for i in range(args.apps):
            agent.request("DELETE", f"/v1/apps/app{i}")
    finally:
        agent.kill_all()

    script = root / "a.sh"
    script.write_text(SCRIPT)
    script.chmod(0o755)
    sup = Supervisord(root, {f"app{i}": {"command": str(script)} for i in range(args.apps)}).start()
    try:
        proxy = xmlrpc.client.ServerProxy(
            "http://127.0.0.1", transport=SupervisorTransport(None, None, f"unix://{sup.sock}")
        )
        time.sleep(3)

        def status() -> None:
            assert len(proxy.supervisor.getAllProcessInfo()) == args.apps

        anchor = [timed(status, args.requests) for _ in range(args.batches)]
    finally:
        sup.stop()

    results = Results(
        "agent_list",
        f"The status list with {args.apps} apps",
        method=(
            f"Wall time of `GET /v1/apps` on a bare agent supervising {args.apps} process apps: the answer carries "
            "every app's state, restarts, CPU and memory. The anchor is supervisord's status call for the same "
            f"programs over its socket. {args.batches} batches of {args.requests} requests; a figure is the median "
            "over batches of each batch's percentile."
        ),
    )
    for pct in (50, 95):
        results.figure(
            f"GET /v1/apps, {args.apps} apps, p{pct}",
            [percentile(batch, pct) for batch in plum],
            unit="ms",
            anchor="supervisord",
            anchor_values=[percentile(batch, pct) for batch in anchor],
            target_max=50,
        )
    results.add_series("plum", "Plum agent: GET /v1/apps", [v for batch in plum for v in batch])
    results.add_series("supervisord", "supervisord: getAllProcessInfo", [v for batch in anchor for v in batch])
    results.save(args.out)


if __name__ == "__main__":
    main()
