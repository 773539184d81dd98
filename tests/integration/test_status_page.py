"""The controller's status page in a real headless browser (Debian's chromium driven by Playwright).

A real controller and agent run one deployment; the page must show its instance, follow a crash and
the restart by itself (no reload), refuse a wrong token clearly, and never put the token in a URL.
With PLUM_UI_SCREENSHOTS=<dir> it also saves the screenshots docs/status-page.md shows."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.agent import Agent, free_port, wait_until
from support.controller import ControllerProc, app_zip

CHROMIUM = os.environ.get("PLUM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = os.environ.get("PLUM_UI_SCREENSHOTS")
TIMEOUT_MS = 20_000


def unavailable(reason: str) -> None:
    """No browser here: a failure under CI (make test installs chromium), a skip on a developer's machine."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; make test installs it (apt-get install chromium, pip install -e 'agent[test]')")
    pytest.skip(reason)


@pytest.fixture
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright  # noqa: PLC0415 - only this test needs it
    except ImportError:
        unavailable("playwright is not installed")
    if CHROMIUM is None:
        unavailable("chromium is not installed")
    with sync_playwright() as pw:
        # --no-sandbox: CI runs as root, where chromium's sandbox refuses to start
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[ControllerProc, Agent]]:
    port = free_port()
    ctl = ControllerProc(
        tmp_path / "controller",
        CONTROLLER_ADDR=f"127.0.0.1:{port}",
        HEARTBEAT_TTL_SEC="3",
        HEARTBEAT_INTERVAL_SEC="0.5",
    ).start()
    env = {
        "AGENT_NODE_ID": "n1",
        "CONTROLLER_BASE": f"http://127.0.0.1:{port}",
        "CONTROLLER_AGENT_TOKEN": ctl.agent,
        "SYNC_INTERVAL_SEC": "1",
    }
    agent = Agent(tmp_path / "n1", env=env).start()
    wait_until(lambda: len(ctl.ok("GET", "/v1/nodes")) == 1, what="the node to register")
    yield ctl, agent
    agent.kill_all()
    ctl.stop()


def running_app(agent: Agent, name: str) -> Any:
    apps = agent.request("GET", "/v1/apps")["apps"]
    return next((a for a in apps if a["name"] == name and a["phase"] == "Running"), None)


def shoot(page: Any, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / name), full_page=True)


def test_status_page_follows_a_crash_and_restart_live(cluster, browser):
    ctl, agent = cluster
    artifact = ctl.upload(app_zip("web", "1.0.0")).json
    entry = {"artifactUrl": artifact["url"], "replicas": {"n1": 1}}
    created = ctl.ok("POST", "/v1/deployments", {"name": "web", "entries": [entry]})
    ctl.ok("POST", f"/v1/deployments/{created['deploymentId']}?action=start")
    (instance,) = created["instances"]
    app = wait_until(lambda: running_app(agent, instance), timeout=15, what=f"{instance} Running on the agent")

    page = browser.new_page(viewport={"width": 1100, "height": 700})
    page.set_default_timeout(TIMEOUT_MS)
    requests: list[Any] = []
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.on("request", lambda request: requests.append(request))  # noqa: PLW0108 - playwright wraps handlers; a bound builtin fails
    base = f"http://127.0.0.1:{ctl.port}"
    reply = page.goto(f"{base}/ui")
    assert reply is not None and reply.ok
    headers = reply.headers
    assert "default-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"

    page.fill("#token", "not-the-operator-token")
    page.click("button[type=submit]")
    page.wait_for_selector("#error:not([hidden])")
    assert "refused this token (401" in page.inner_text("#error")
    assert page.is_hidden("#status")
    shoot(page, "status-page-wrong-token.png")

    page.fill("#token", ctl.operator)
    page.click("button[type=submit]")
    row = f"#deployments tr[data-instance='{instance}']"
    page.wait_for_selector(f"{row} .phase >> text=Running")
    page.wait_for_selector("#connection >> text=live")
    assert page.is_hidden("#login")
    assert page.inner_text("#nodes tr[data-node='n1']").split("\t")[1].strip() == "Healthy"
    page.evaluate("window.plumNoReload = true")  # gone if the page reloads
    shoot(page, "status-page.png")

    os.kill(app["pid"], signal.SIGKILL)
    # the page changes by itself: the instance restarts (a restart count) or leaves Running for a while;
    # sooner than the page's 10 s fallback poll, so the event stream brought it
    page.wait_for_function(
        """(row) => {
            const tr = document.querySelector(row);
            return tr && (tr.querySelector('.restarts').textContent !== '0'
                || !tr.querySelector('.phase').textContent.includes('Running'));
        }""",
        arg=row,
        timeout=8_000,
    )
    page.wait_for_function(
        """(row) => {
            const tr = document.querySelector(row);
            return tr && tr.querySelector('.phase').textContent.includes('Running')
                && tr.querySelector('.restarts').textContent !== '0';
        }""",
        arg=row,
    )
    events = page.inner_text("#events")
    assert instance in events and ("restarted" in events or "→" in events), events
    assert page.evaluate("window.plumNoReload") is True
    shoot(page, "status-page-after-crash.png")

    assert not [line for line in console if "Content Security Policy" in line], console
    data_calls = [r for r in requests if "/v1/" in r.url]
    assert any(r.url.endswith("/v1/stream") for r in data_calls)
    for request in requests:
        assert ctl.operator not in request.url and "token" not in request.url.lower(), request.url
    for request in data_calls:
        assert request.headers.get("authorization", "").startswith("Bearer "), request.url
    page.close()
