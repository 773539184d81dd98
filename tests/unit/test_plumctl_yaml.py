"""The YAML subset plumctl reads deployment files with: what it reads equals PyYAML's reading, and what it
does not support is refused with the line number rather than misread."""

from __future__ import annotations

import pytest
import yaml

from plum.cli.yamlsubset import YAMLError, loads

DOCUMENTS = [
    "name: web\nentries:\n  - app: hello\n    replicas: 2\n",
    "---\n# comment\nname: 'it''s'\nlabels: {team: core, tier: \"front # not a comment\"}\n",
    "entries:\n- artifactId: abc  # trailing comment\n  replicas: {n1: 1, n2: 0}\n- app: b\n  version: 2.0\n",
    "update:\n  maxUnavailable: 1\n  minHealthySeconds: 2.5\n  autoRollback: false\n  other: null\n  tilde: ~\n",
    "env:\n  URL: http://x:80/a?b=c\n  EMPTY: ''\n  QUOTED: \"a\\tb\"\n  NUM: '8080'\n",
    'ports:\n  - "8080:80"\n  - {container: 80, host: 8081, protocol: tcp}\n  - [1, [2, 3], {a: b}]\n',
    "nested:\n  -\n    a: 1\n  - - x\n    - y\nempty:\nlast: -1\n",
    "placement:\n  nodes: [n1, 'n2']\n  labels:\n    zone: a\nversion: 1.0.0\nneg: -3.5e+2\n",
]


@pytest.mark.parametrize("text", DOCUMENTS)
def test_reads_what_pyyaml_reads(text: str) -> None:
    assert loads(text) == yaml.safe_load(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: &x 1\n", "line 1: anchors are not supported"),
        ("a: 1\nb: *x\n", "line 2: aliases are not supported"),
        ("a: !!str 1\n", "line 1: tags are not supported"),
        ("script: |\n  echo hi\n", "line 1: block scalars are not supported"),
        ("a: 1\n\tb: 2\n", "line 2: tabs cannot indent YAML"),
        ("a: 1\na: 2\n", "line 2: duplicate key 'a'"),
        ("a:\n  b: 1\n    c: 2\n", "line 3: unexpected indentation"),
        ("a: 1\n---\nb: 2\n", "line 2: only one document"),
        ("a: [1, 2\n", "line 1: ',' or ']' expected"),
        ("a: 'open\n", "line 1: a quoted string is not closed"),
    ],
)
def test_refuses_what_it_does_not_support_naming_the_line(text: str, message: str) -> None:
    with pytest.raises(YAMLError, match=message.replace("[", r"\[").replace("]", r"\]")):
        loads(text)


def test_an_empty_document_is_null() -> None:
    assert loads("# nothing\n\n") is None
