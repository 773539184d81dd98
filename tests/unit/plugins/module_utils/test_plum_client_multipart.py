"""Contract: the collection's streaming multipart encoder (module_utils cannot import plum) sends what the
agent's and the controller's reader parse into the same parts as plum's own encoder."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("ansible")

from ansible_collections.plum.deploy.plugins.module_utils import _client

from plum.common.multipart import Part, encode_multipart
from support.multipart import FRAMING_LOOKALIKE, read_parts


@pytest.mark.parametrize(("chunk", "read_size"), [(1, -1), (5, 3), (64, 1000), (1 << 20, 1 << 20)])
def test_the_collection_encoder_and_plums_give_the_same_parts(tmp_path: Path, chunk: int, read_size: int) -> None:
    artifact = tmp_path / "app.zip"
    artifact.write_bytes(FRAMING_LOOKALIKE * 100)
    spec = b'{"start_cmd": "./run --port 8080"}'
    streamed = _client.MultipartBody(
        [("artifact", "app.zip", "application/zip", str(artifact)), ("spec", None, "application/json", spec)]
    )
    sent = bytearray()
    while piece := streamed.read(read_size):
        sent += piece
    streamed.close()
    assert len(sent) == streamed.length
    reference, reference_type = encode_multipart(
        [
            Part("artifact", artifact.read_bytes(), "app.zip", "application/zip"),
            Part("spec", spec, content_type="application/json"),
        ]
    )
    expected = read_parts(reference, reference_type, chunk)
    assert read_parts(bytes(sent), streamed.content_type, chunk) == expected
    assert [name for name, *_ in expected] == ["artifact", "spec"]
