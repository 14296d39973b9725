"""sluicegate: a streaming LLM gateway with an OpenAI-compatible API."""

from .config import GatewayConfig, load_config
from .errors import GatewayError
from .server import Gateway

__all__ = ["Gateway", "GatewayConfig", "GatewayError", "load_config"]
__version__ = "0.1.0"
