"""Values of the Docker runtime: memory, CPUs, ports, images; the spec fields and the agent settings."""

from __future__ import annotations

import json
import os

import pytest

from plum.agent.config import AgentConfig
from plum.agent.spec import AppSpec, SpecError, parse_spec
from plum.common import resources as dres
from plum.common.config import ConfigError

MIB = 1024 * 1024
DOCKER = ("process", "docker")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("512m", 512 * MIB),
        ("512M", 512 * MIB),
        ("512mb", 512 * MIB),
        ("512MiB", 512 * MIB),
        ("1g", 1024 * MIB),
        ("1.5g", 1536 * MIB),
        ("0.5G", 512 * MIB),
        ("6291456", 6 * MIB),
        (6291456, 6 * MIB),
        ("6144k", 6 * MIB),
        (" 64m ", 64 * MIB),
        ("1t", 1024 * 1024 * MIB),
    ],
)
def test_memory_units(value, expected):
    assert dres.parse_memory(value) == expected


@pytest.mark.parametrize(
    "value",
    ["5m", "abc", "", "-1g", "2048", 2048, "1.5", "12iB", "1x", True, None, [], "1e9"],
)
def test_bad_memory_is_refused(value):
    with pytest.raises(ValueError, match=r"6 MiB|expected a size"):
        dres.parse_memory(value)


def test_memory_has_an_upper_bound():
    with pytest.raises(ValueError, match="larger than"):
        dres.parse_memory("2048t")


def test_format_memory():
    assert [dres.format_memory(v) for v in (1536 * MIB, 64 * MIB, 2 * 1024 * MIB, 6 * MIB + 1)] == [
        "1536m",
        "64m",
        "2g",
        str(6 * MIB + 1),
    ]


@pytest.mark.parametrize(("value", "expected"), [(0.5, 0.5), ("1.5", 1.5), (2, 2.0), ("0.01", 0.01)])
def test_cpus(value, expected):
    assert dres.parse_cpus(value) == expected


@pytest.mark.parametrize("value", [0, "0", -1, "lots", "nan", "inf", 0.001, True, None, 5000])
def test_bad_cpus_are_refused(value):
    with pytest.raises(ValueError):
        dres.parse_cpus(value)


@pytest.mark.parametrize(
    ("value", "mapping"),
    [
        ("8080:80", dres.PortMapping(None, 8080, 80, "tcp")),
        ("127.0.0.1:5353:53/udp", dres.PortMapping("127.0.0.1", 5353, 53, "udp")),
        ("0.0.0.0:80:8080/TCP", dres.PortMapping("0.0.0.0", 80, 8080, "tcp")),
        ("[::1]:8443:443", dres.PortMapping("::1", 8443, 443, "tcp")),
        ({"host": 8080, "container": 80}, dres.PortMapping(None, 8080, 80, "tcp")),
        (
            {"host": 53, "container": 53, "protocol": "udp", "hostIp": "::1"},
            dres.PortMapping("::1", 53, 53, "udp"),
        ),
        # no host port: Docker picks one when the container starts
        ("80", dres.PortMapping(None, None, 80, "tcp")),
        ("53/udp", dres.PortMapping(None, None, 53, "udp")),
        ("127.0.0.1::80", dres.PortMapping("127.0.0.1", None, 80, "tcp")),
        ("[::1]::443/udp", dres.PortMapping("::1", None, 443, "udp")),
        ({"container": 8080}, dres.PortMapping(None, None, 8080, "tcp")),
        (
            {"container": "8080", "protocol": "udp"},
            dres.PortMapping(None, None, 8080, "udp"),
        ),
        (
            {"container": 80, "hostIp": "0.0.0.0"},
            dres.PortMapping("0.0.0.0", None, 80, "tcp"),
        ),
        # Plum's port mappings: serviceName ignored, a service protocol published as TCP
        (
            {"host": 8081, "container": 80, "serviceName": "web", "protocol": "http"},
            dres.PortMapping(None, 8081, 80, "tcp"),
        ),
        (
            {"container": 5353, "serviceName": "dns", "protocol": "udp"},
            dres.PortMapping(None, None, 5353, "udp"),
        ),
    ],
)
def test_ports(value, mapping):
    parsed = dres.parse_port(value)
    assert parsed == mapping
    assert dres.parse_port(parsed.canonical()) == mapping


@pytest.mark.parametrize(
    "value",
    [
        "",
        "a:b",
        "127.0.0.1:70000:80",
        "0:80",
        "0",
        ":80",
        "::80",
        "80:",
        "1.2.3.4:80",
        "8080:80/sctp",
        "80/",
        "999.1.1.1:80:80",
        "localhost:80:80",
        "[::1]:80",
        "1:2:3:4",
        "\u0663\u0663",  # digits, but not ASCII ones
        8080,
        {},
        {"host": 80},
        {"container": 0},
        {"container": True},
        {"container": 80, "host": 0},
        {"container": 80, "host": 70000},
        {"host": 80, "container": 80, "proto": "tcp"},
        {"host": 80, "container": 80, "protocol": "sctp"},
        {"container": 80, "hostIp": "localhost"},
        {"container": 80, "serviceName": 5},
    ],
)
def test_bad_ports_are_refused(value):
    with pytest.raises(ValueError):
        dres.parse_port(value)


def test_a_bad_port_object_names_its_key():
    for value, key in (
        ({"host": 80}, "container"),
        ({"container": 80, "host": "x"}, "host"),
        ({"container": 80, "protocol": "sctp"}, "protocol"),
        ({"container": 80, "hostIp": "nope"}, "hostIp"),
        ({"container": 80, "extra": 1}, "extra"),
        ("80:80:80:80", None),
    ):
        with pytest.raises(dres.PortError) as err:
            dres.parse_port(value)
        assert err.value.key == key, value


def test_port_objects_round_trip():
    for text in (
        "8080:80/tcp",
        "127.0.0.1:53:53/udp",
        "80/tcp",
        "127.0.0.1::80/tcp",
        "[::1]::443/udp",
    ):
        mapping = dres.parse_port(text)
        assert mapping.canonical() == text
        assert dres.parse_port(mapping.to_object()) == mapping
    assert dres.parse_port("80").to_object() == {"container": 80, "protocol": "tcp"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("nginx", "nginx:latest"),
        ("plum-test/base:bookworm", "plum-test/base:bookworm"),
        ("localhost:5000/team/app", "localhost:5000/team/app:latest"),
        ("registry.example.org:5000/app:1.2.3", "registry.example.org:5000/app:1.2.3"),
        ("app@sha256:" + "a" * 64, "app@sha256:" + "a" * 64),
    ],
)
def test_images(value, expected):
    assert dres.validate_image(value) == expected


@pytest.mark.parametrize("value", ["Upper/Case", "has space", "", "app:", ":tag", "a" * 300, 5])
def test_bad_images_are_refused(value):
    with pytest.raises(ValueError):
        dres.validate_image(value)


def test_image_tag():
    assert dres.image_tag("a/b:1.0") == "1.0"
    assert dres.image_tag("localhost:5000/b:2") == "2"
    assert dres.image_tag("b@sha256:" + "0" * 64) == "latest"


# ---- the spec ------------------------------------------------------------------------------------


def test_docker_fields_are_normalised():
    spec = parse_spec(
        {
            "image": "plum-test/base",
            "memory": "1.5g",
            "cpus": "0.5",
            "network_mode": "bridge",
            "ports": ["8080:80", "127.0.0.1:53:53/udp"],
            "host_lib_paths": ["/usr/lib/x/", "/usr/lib/x"],
            "seccomp_unconfined": True,
            "pull_policy": "never",
        },
        runtimes=DOCKER,
    )
    assert spec.image == "plum-test/base:latest"
    assert (spec.memory, spec.cpus) == (1536 * MIB, 0.5)
    assert spec.ports == ("8080:80/tcp", "127.0.0.1:53:53/udp")
    assert spec.host_lib_paths == ("/usr/lib/x",)
    assert spec.docker_fields_set() == [
        "image",
        "pull_policy",
        "memory",
        "cpus",
        "network_mode",
        "ports",
        "host_lib_paths",
        "seccomp_unconfined",
    ]
    # what is saved parses back to the same spec (the record keeps to_dict(), as JSON)
    assert parse_spec(json.loads(json.dumps(spec.to_dict())), runtimes=("docker",)) == spec


def test_ports_without_a_host_port_are_accepted_and_never_collide():
    spec = parse_spec(
        {
            "ports": [
                "80",
                {"container": 80},
                {"container": 53, "protocol": "udp"},
                "8080:80",
            ]
        },
        runtimes=DOCKER,
    )
    assert spec.ports == ("80/tcp", "80/tcp", "53/udp", "8080:80/tcp")
    assert parse_spec(json.loads(json.dumps(spec.to_dict())), runtimes=DOCKER) == spec
    with pytest.raises(SpecError, match="published twice"):
        parse_spec({"ports": ["8080:80", {"host": 8080, "container": 81}]}, runtimes=DOCKER)


def test_equivalent_spellings_have_one_digest_and_old_specs_keep_theirs():
    assert parse_spec({"memory": "1g"}).digest() == parse_spec({"memory": 1024 * MIB}).digest()
    assert parse_spec({"ports": ["8080:80"]}).digest() == parse_spec({"ports": ["8080:80/tcp"]}).digest()
    # a spec written before the Docker fields existed hashes as it did then
    assert AppSpec().digest() == parse_spec({"pull_policy": "if-not-present", "ports": []}).digest()


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"memory": "5m"}, "memory"),
        ({"memory": "abc"}, "memory"),
        ({"cpus": 0}, "cpus"),
        ({"network_mode": "weird"}, "network_mode"),
        ({"ports": [":80"]}, "ports"),
        ({"ports": [{"host": 8080}]}, "ports"),
        ({"ports": "8080:80"}, "ports"),
        ({"ports": ["8080:80", "8080:81"]}, "ports"),
        ({"ports": ["8080:80"], "network_mode": "host"}, "ports"),
        ({"pull_policy": "sometimes"}, "pull_policy"),
        ({"image": "UPPER"}, "image"),
        ({"base_image": "no good"}, "base_image"),
        ({"image": "a:1", "base_image": "b:1"}, "base_image"),
        ({"image": "a:1", "runtime": "process"}, "runtime"),
        ({"host_lib_paths": ["rel"]}, "host_lib_paths"),
        ({"host_lib_paths": ["/"]}, "host_lib_paths"),
        ({"host_lib_paths": ["/a/../etc"]}, "host_lib_paths"),
        ({"host_lib_paths": ["/a:b"]}, "host_lib_paths"),
        ({"host_lib_paths": "/usr/lib"}, "host_lib_paths"),
        ({"seccomp_unconfined": 1}, "seccomp_unconfined"),
    ],
)
def test_bad_docker_fields_are_named(data, field):
    with pytest.raises(SpecError) as err:
        parse_spec(data, runtimes=DOCKER)
    assert err.value.field == field
    assert err.value.message.startswith(f"spec.{field}")


def test_an_image_app_is_refused_where_docker_is_missing():
    with pytest.raises(SpecError) as err:
        parse_spec({"image": "a:1"})
    assert err.value.field == "runtime" and "no Docker engine" in err.value.message


# ---- agent settings -------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith(("AGENT_", "CONTROLLER_", "PLUM_", "DOCKER_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AGENT_DATA_DIR", str(tmp_path / "data"))
    return monkeypatch


def test_docker_settings_defaults(clean_env):
    docker = AgentConfig.load().docker
    assert docker.base_image == "ubuntu:22.04"
    assert (docker.memory, docker.cpus, docker.env, docker.host_lib_paths) == (
        None,
        None,
        {},
        (),
    )
    assert (docker.network_mode, docker.publish_host, docker.controller_host) == (
        "bridge",
        "127.0.0.1",
        None,
    )
    assert docker.docker_host is None


def test_docker_settings(clean_env, tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    clean_env.setenv("PLUM_BASE_IMAGE", "plum-test/base:bookworm")
    clean_env.setenv("PLUM_CONTAINER_MEMORY", "512MiB")
    clean_env.setenv("PLUM_CONTAINER_CPUS", "1.5")
    clean_env.setenv("PLUM_CONTAINER_ENV", '{"A": "1,2,3", "B": "x=y;z", "N": 7}')
    clean_env.setenv("PLUM_HOST_LIB_PATHS", f"{lib}/, {lib}")
    clean_env.setenv("PLUM_CONTAINER_NETWORK_MODE", "HOST")
    clean_env.setenv("PLUM_CONTROLLER_HOST", "controller.internal")
    clean_env.setenv("PLUM_PUBLISH_HOST", "0.0.0.0")
    clean_env.setenv("DOCKER_HOST", "unix:///run/other.sock")
    docker = AgentConfig.load().docker
    assert docker.base_image == "plum-test/base:bookworm"
    assert (docker.memory, docker.cpus) == (512 * MIB, 1.5)
    assert docker.env == {"A": "1,2,3", "B": "x=y;z", "N": "7"}
    assert docker.host_lib_paths == (str(lib),)
    assert (docker.network_mode, docker.controller_host, docker.publish_host) == (
        "host",
        "controller.internal",
        "0.0.0.0",
    )
    assert docker.docker_host == "unix:///run/other.sock"


def test_docker_settings_from_a_config_file(clean_env, tmp_path):
    config = tmp_path / "agent.env"
    config.write_text('PLUM_CONTAINER_ENV={"GREETING": "hello, world"}\nDOCKER_HOST=tcp://127.0.0.1:2375\n')
    docker = AgentConfig.load(str(config)).docker
    assert docker.env == {"GREETING": "hello, world"}
    assert docker.docker_host == "tcp://127.0.0.1:2375"


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("PLUM_CONTAINER_MEMORY", "5m", "6 MiB"),
        ("PLUM_CONTAINER_MEMORY", "lots", "expected a size"),
        ("PLUM_CONTAINER_CPUS", "0", "at least"),
        ("PLUM_CONTAINER_ENV", "A=1,B=2", "JSON object"),
        ("PLUM_CONTAINER_ENV", '["A=1"]', "JSON object"),
        ("PLUM_CONTAINER_ENV", '{"1A": "x"}', "invalid variable name"),
        ("PLUM_CONTAINER_ENV", '{"PLUM_INSTANCE_ID": "x"}', "set by the agent"),
        ("PLUM_CONTAINER_ENV", '{"A": null}', "string or number"),
        ("PLUM_HOST_LIB_PATHS", "/definitely/not/here", "does not exist"),
        ("PLUM_HOST_LIB_PATHS", "relative/lib", "not an absolute path"),
        ("PLUM_CONTAINER_NETWORK_MODE", "weird", "must be one of"),
        ("PLUM_PUBLISH_HOST", "localhost", "IP address"),
        ("PLUM_CONTROLLER_HOST", "bad host!", "host name"),
        ("PLUM_BASE_IMAGE", "Not An Image", "image name"),
        ("DOCKER_HOST", "/var/run/docker.sock", "unix://"),
    ],
)
def test_bad_docker_settings_name_the_variable(clean_env, name, value, words):
    clean_env.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        AgentConfig.load()
    assert name in str(err.value) and words in str(err.value)
