"""sluicegate: a streaming LLM gateway with an OpenAI-compatible API.

The gateway's names below load on first access (module ``__getattr__``), so importing the
client SDK (``sluicegate.client``) does not import the server (aiohttp, prometheus_client).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import GatewayConfig, load_config
    from .errors import GatewayError
    from .server import Gateway

__all__ = ["Gateway", "GatewayConfig", "GatewayError", "load_config"]
__version__ = "0.1.0"

_LAZY = {
    "Gateway": ".server",
    "GatewayConfig": ".config",
    "GatewayError": ".errors",
    "load_config": ".config",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
