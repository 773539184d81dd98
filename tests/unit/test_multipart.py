"""The one multipart encoder the runtime's clients send with, read back by the daemons' reader."""

from __future__ import annotations

import pytest

from plum.common.multipart import Part, encode_multipart
from support.multipart import FRAMING_LOOKALIKE, read_parts


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
def test_fields_and_files_come_back_whole_under_any_chunking(chunk: int) -> None:
    parts = [
        Part("artifact", FRAMING_LOOKALIKE, "app.zip", "application/zip"),
        Part("spec", b'{"env": {"A": "1"}}', content_type="application/json"),
        Part("empty", b""),
    ]
    body, content_type = encode_multipart(parts)
    assert read_parts(body, content_type, chunk) == [
        ("artifact", "app.zip", "application/zip", FRAMING_LOOKALIKE),
        ("spec", None, "application/json", b'{"env": {"A": "1"}}'),
        ("empty", None, "application/octet-stream", b""),
    ]


def test_each_body_has_its_own_boundary() -> None:
    first = encode_multipart([Part("a", b"x")])[1]
    assert first != encode_multipart([Part("a", b"x")])[1]
