"""SHA-256 and constant-time comparison without loading OpenSSL.

hashlib and hmac load libcrypto (about 3.5 MiB of resident memory for as long as the process lives); the
agent only hashes artifacts and specs at deploy time and compares tokens, which Python's built-in
implementations do too: the built-in SHA-256 is slower (about 250 MB/s against 1.5 GB/s), which an upload
or an unpack of an artifact does not notice next to its I/O.
"""

from __future__ import annotations

import importlib
from typing import Callable, Protocol, cast


class Hash(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def digest(self) -> bytes: ...

    def hexdigest(self) -> str: ...


def _pick() -> tuple[Callable[[bytes], Hash], Callable[[bytes, bytes], bool]]:
    impl = None
    for module in ("_sha2", "_sha256"):  # Python >= 3.12, <= 3.11
        try:
            impl = importlib.import_module(module).sha256
            break
        except (ImportError, AttributeError):
            continue
    if impl is None:  # a build without them
        impl = importlib.import_module("hashlib").sha256
    try:  # what hmac.compare_digest is made of when OpenSSL is absent
        compare = importlib.import_module("_operator")._compare_digest
    except (ImportError, AttributeError):
        compare = importlib.import_module("hmac").compare_digest
    return cast("Callable[[bytes], Hash]", impl), cast("Callable[[bytes, bytes], bool]", compare)


_SHA256, _COMPARE = _pick()


def sha256(data: bytes = b"") -> Hash:
    """A new SHA-256 (update, digest, hexdigest), as hashlib.sha256."""
    return _SHA256(data)


def compare_digest(a: bytes, b: bytes) -> bool:
    """Equality in a time that does not tell where a and b differ, as hmac.compare_digest."""
    return _COMPARE(a, b)
