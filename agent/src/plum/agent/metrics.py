"""Prometheus text exposition of the agent's apps (format 0.0.4)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from plum import __version__
from plum.common.prometheus import escape
from plum.common.vocab import AGENT_PHASES

if TYPE_CHECKING:
    from plum.agent.supervisor import Supervisor


def render(supervisor: Supervisor) -> str:
    statuses = supervisor.statuses()
    node = escape(supervisor.config.node_id)
    lines = [
        "# HELP plum_agent_info Agent build and node information.",
        "# TYPE plum_agent_info gauge",
        f'plum_agent_info{{node="{node}",version="{__version__}",run_mode="{supervisor.config.run_mode}"}} 1',
        "# HELP plum_agent_apps Apps on this agent by phase.",
        "# TYPE plum_agent_apps gauge",
    ]
    for phase in AGENT_PHASES:
        count = sum(1 for s in statuses if s["phase"] == phase)
        lines.append(f'plum_agent_apps{{phase="{phase}"}} {count}')
    families: list[tuple[str, str, str, Callable[[dict[str, Any]], Any]]] = [
        ("plum_app_up", "gauge", "1 when the app's instance is running.", lambda s: int(s["pid"] is not None)),
        ("plum_app_restarts_total", "counter", "Automatic restarts since the last deploy.", lambda s: s["restarts"]),
        ("plum_app_cpu_seconds_total", "counter", "CPU time used by the app's processes.", lambda s: s["cpu_seconds"]),
        ("plum_app_memory_bytes", "gauge", "Resident memory of the app's processes.", lambda s: s["memory_bytes"]),
    ]
    for name, kind, help_text, value in families:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for status in statuses:
            sample = value(status)
            if sample is not None:
                lines.append(f'{name}{{app="{escape(status["name"])}"}} {sample}')
    lines += ["# HELP plum_app_info App version, runtime and phase.", "# TYPE plum_app_info gauge"]
    for s in statuses:
        labels = ",".join(f'{key}="{escape(s[key] or "")}"' for key in ("name", "version", "runtime", "phase")).replace(
            'name="', 'app="', 1
        )
        lines.append(f"plum_app_info{{{labels}}} 1")
    return "\n".join(lines) + "\n"
