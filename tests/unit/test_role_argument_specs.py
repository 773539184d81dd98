"""The roles' argument specs and defaults say the same thing, and the internal role's callers pass
exactly the inputs its entry points declare."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[2] / "roles"
PRODUCT_ROLES = ("plum_controller", "plum_agent")


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


@pytest.mark.parametrize("role", PRODUCT_ROLES)
def test_defaults_and_argument_specs_agree(role):
    defaults = load(ROLES / role / "defaults" / "main.yml")
    options = load(ROLES / role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert sorted(defaults) == sorted(options), "defaults/main.yml and meta/argument_specs.yml list other variables"
    for name, spec in options.items():
        assert spec.get("description"), f"{role}: {name} has no description"
        assert spec.get("type"), f"{role}: {name} has no type"
        assert spec.get("default") == defaults[name], f"{role}: {name}: spec default differs from defaults/main.yml"
        if "choices" in spec and isinstance(defaults[name], str) and "{{" not in defaults[name]:
            assert defaults[name] in spec["choices"], f"{role}: {name}: default not among its choices"


@pytest.mark.parametrize("role", PRODUCT_ROLES)
def test_variables_carry_the_role_prefix(role):
    for name in load(ROLES / role / "defaults" / "main.yml"):
        assert name.startswith(role + "_"), name


def common_calls(role: str):
    for path in sorted((ROLES / role / "tasks").glob("*.yml")):
        for task in load(path) if isinstance(load(path), list) else []:
            include = task.get("ansible.builtin.include_role")
            if include and include.get("name") == "plum.deploy.plum_common":
                yield (
                    path.name,
                    include["tasks_from"].removesuffix(".yml"),
                    task.get("vars", {}),
                )


@pytest.mark.parametrize("role", PRODUCT_ROLES)
def test_callers_pass_what_the_internal_role_declares(role):
    specs = load(ROLES / "plum_common" / "meta" / "argument_specs.yml")["argument_specs"]
    calls = list(common_calls(role))
    assert calls, f"{role} never calls plum_common"
    for where, entry, passed in calls:
        declared = set(specs[entry]["options"])
        inputs = {name for name in passed if name.startswith("_plum_common_")}
        assert inputs == declared, (
            f"{role}/tasks/{where} -> {entry}: passes {sorted(inputs ^ declared)} unlike the spec"
        )
