"""asyncio without OpenSSL until TLS is used.

asyncio imports ssl for its TLS transports, which maps libssl and libcrypto into the process: about 4 MiB of
resident memory an agent that never talks TLS (no controller, or one over plain http) carries for nothing.
Importing this module first imports asyncio with ssl held back; `ssl_module()` gives asyncio its TLS back
the first time a TLS connection is made (plum.common.httpclient).
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

if "asyncio" not in sys.modules and "ssl" not in sys.modules:
    sys.modules["ssl"] = None  # type: ignore[assignment]  # `import ssl` raises ImportError: asyncio goes without
    try:
        import asyncio  # noqa: F401
    finally:
        del sys.modules["ssl"]

# asyncio's modules that bind `ssl` at import (3.9 to 3.13).
_ASYNCIO_SSL_USERS = ("asyncio.base_events", "asyncio.selector_events")


def ssl_module() -> ModuleType:
    """The ssl module, with asyncio's TLS transports given back if asyncio was imported without it."""
    import ssl  # noqa: PLC0415 - on first use only

    sslproto = sys.modules.get("asyncio.sslproto")
    if sslproto is not None and getattr(sslproto, "ssl", ssl) is None:
        for name in _ASYNCIO_SSL_USERS:
            module = sys.modules.get(name)
            if module is not None and getattr(module, "ssl", ssl) is None:
                module.ssl = ssl  # type: ignore[attr-defined]
        importlib.reload(sslproto)  # its classes are built differently with ssl at hand
    return ssl
