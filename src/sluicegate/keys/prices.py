"""The cost of a request in USD: a deployment's ``price`` override, else the ``genai-prices``
table (offline data shipped in the package; no download at run time).

- The embedded model (provider ``local``) costs 0.
- ``prompt_tokens`` includes cached tokens (``prompt_tokens_details.cached_tokens``), which
  are priced at the cached-input rate when the provider has one. Reasoning tokens are part of
  ``completion_tokens`` and priced as output, as OpenAI, Anthropic and Gemini bill them.
- A model neither overridden nor in the table costs 0, with one warning per model: a request
  is never refused for a missing price (add a ``price`` to the deployment to budget it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..config import PriceOverride
from ..providers.base import Target

__all__ = ["Prices", "cost_usd", "prices_for"]

log = logging.getLogger("sluicegate.keys")

_warned: set[str] = set()


@dataclass(frozen=True, slots=True)
class Prices:
    """USD per million tokens."""

    input: float
    output: float
    cached_input: float

    def cost(self, prompt: int, completion: int, cached: int = 0) -> float:
        cached = min(max(cached, 0), prompt)
        return ((prompt - cached) * self.input + cached * self.cached_input
                + completion * self.output) / 1e6


FREE = Prices(0.0, 0.0, 0.0)


@lru_cache(maxsize=1024)
def _table(provider: str, model: str) -> Prices | None:
    try:
        from genai_prices import Usage, calc_price

        mtok = 1_000_000
        base = calc_price(Usage(input_tokens=mtok, output_tokens=mtok), model,
                          provider_id=provider)
        cached = calc_price(Usage(input_tokens=mtok, cache_read_tokens=mtok), model,
                            provider_id=provider)
    except Exception:  # LookupError for an unknown model; anything else: no price either
        return None
    return Prices(float(base.input_price), float(base.output_price), float(cached.input_price))


def prices_for(target: Target | None) -> Prices:
    """The prices of the deployment ``target`` runs on."""
    if target is None:
        return FREE
    deployment = target.deployment
    override: PriceOverride | None = deployment.price if deployment is not None else None
    if override is not None:
        cached = override.cached_input_per_mtok
        return Prices(override.input_per_mtok, override.output_per_mtok,
                      override.input_per_mtok if cached is None else cached)
    dialect = getattr(target.provider, "dialect", None) or target.provider.name
    if target.provider.name == "local" or dialect == "local":
        return FREE
    found = _table(target.provider.name, target.upstream_model) or (
        _table(str(dialect), target.upstream_model))
    if found is None:
        name = f"{target.provider.name}/{target.upstream_model}"
        if name not in _warned:
            _warned.add(name)
            log.warning("no price for %s (not in genai-prices, no price override): its "
                        "requests cost 0 against budgets", name)
        return FREE
    return found


def cost_usd(prices: Prices, usage: dict[str, Any]) -> float:
    """The cost of an OpenAI usage object; 0 for an answer from the stream cache
    (``"cached": true``: nothing was asked of the upstream)."""
    if usage.get("cached") is True:
        return 0.0
    details = usage.get("prompt_tokens_details") or {}
    cached = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    return prices.cost(int(usage.get("prompt_tokens") or 0),
                       int(usage.get("completion_tokens") or 0), cached)
