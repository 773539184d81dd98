"""The module_utils copies of the runtime's vocabulary, pinned to plum.common.vocab and plum.common.resources.

module_utils must stand alone on a target, so it cannot import ``plum``; each copy is checked here against the
runtime's own definition, by value where it is a value and by behaviour where it is a parser.
"""

from __future__ import annotations

import pytest
import yaml

pytest.importorskip("ansible")

from ansible_collections.plum.deploy.plugins.module_utils import _deployment_plan as dp
from ansible_collections.plum.deploy.plugins.module_utils import _spec, _status
from ansible_collections.plum.deploy.plugins.modules import plum_app, plum_deployment

from plum.common import resources, vocab


def test_phases():
    assert tuple(p.value for p in vocab.Phase) == _status.PHASES
    assert set(_status.ACTIVE_PHASES) == {p.value for p in vocab.ACTIVE_PHASES}
    assert set(_status.FAILING_PHASES) == {vocab.Phase.FAILED.value, vocab.Phase.BACKOFF.value}
    assert set(_status.ENDED_PHASES) == {
        vocab.Phase.FAILED.value,
        vocab.Phase.STOPPED.value,
        vocab.Phase.COMPLETED.value,
    }
    assert vocab.Phase.DOWNLOADING.value == _status.DOWNLOADING
    assert vocab.Phase.COMPLETED.value == _status.COMPLETED


def test_deployment_statuses_are_the_controllers_desired_states():
    assert vocab.ControllerDesired.RUNNING.value == dp.RUNNING
    assert vocab.ControllerDesired.STOPPED.value == dp.STOPPED


def test_restart_policies_network_modes_runtimes():
    assert dp.RESTART_POLICIES == vocab.RESTART_POLICIES
    assert dp.NETWORK_MODES == resources.NETWORK_MODES
    assert tuple(m.value for m in vocab.RunMode) == dp.RUNTIMES


def test_port_protocols_are_the_runtimes_transports():
    assert dp.TRANSPORTS == resources.TRANSPORTS
    for transport in resources.TRANSPORTS:
        assert dp.port_item(f"80/{transport}")["protocol"] == transport
        assert _spec.port_mapping(f"80/{transport}") == f"80/{transport}"
    for protocol in set(vocab.PROTOCOLS) - set(resources.TRANSPORTS):
        with pytest.raises(dp.ParamError):
            dp.port_item(f"80/{protocol}")


@pytest.mark.parametrize(
    "node",
    ["n1", "node-a", "a.b_c-d", "A", "9", "x" * 63, "x" * 64, "", "-a", ".a", "_a", "a b", "a/b", "ä", "a:b", "n1\n"],
)
def test_the_node_id_rule(node):
    assert bool(dp.NODE_ID.fullmatch(node)) == bool(vocab.NODE_ID_RE.fullmatch(node))
    assert dp.NODE_ID.pattern == vocab.NODE_ID_PATTERN


def test_reserved_environment_variables():
    assert _spec.RESERVED_ENV == resources.RESERVED_ENV
    for name in ["A", "_a1", "a-b", "1a", "", "A B", "é", "A\n"]:
        assert bool(_spec.ENV_NAME.fullmatch(name)) == bool(resources.ENV_NAME_RE.fullmatch(name)), name


MEMORY_VALUES = [
    "512m",
    "1g",
    "1.5g",
    "512MiB",
    "512mb",
    "64MB",
    " 8m ",
    ".5g",
    "536870912",
    536870912,
    6291456.0,
    "5m",
    "6m",
    "1x",
    "",
    "MiB",
    "m",
    "1 g",
    "1e9",
    "-1g",
    "1025t",
    "1024t",
    True,
    None,
    [],
    2**50,
    2**50 + 1,
    float("inf"),
    float("nan"),
]


@pytest.mark.parametrize("value", MEMORY_VALUES, ids=repr)
def test_memory_parsing(value):
    try:
        expected = resources.parse_memory(value)
    except ValueError:
        with pytest.raises(_spec.SpecError, match="memory"):
            _spec.memory_bytes(value)
    else:
        assert _spec.memory_bytes(value) == expected


@pytest.mark.parametrize("module", [plum_app, plum_deployment], ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_the_modules_choices(module):
    """validate-modules ties each argument_spec to its DOCUMENTATION; this ties both to the runtime."""
    options = yaml.safe_load(module.DOCUMENTATION)["options"]
    assert options["restart_policy"]["choices"] == list(vocab.RESTART_POLICIES)
    assert options["network_mode"]["choices"] == list(resources.NETWORK_MODES)
    assert options["runtime"]["choices"] == [m.value for m in vocab.RunMode]
    if "pull_policy" in options:
        assert options["pull_policy"]["choices"] == list(resources.PULL_POLICIES)
