"""The SDK imports no server code: ``import sluicegate.client`` (in a fresh interpreter) loads
neither aiohttp nor prometheus_client; the gateway's names load lazily; the retry rule is one
module shared by both sides."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _fresh(code: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, env=env, timeout=60)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_importing_the_sdk_loads_no_server_code() -> None:
    seen = _fresh(
        # httpx is the SDK's transport; what it loads itself varies with what else is
        # installed (its CLI pulls in rich when click is present), so it is loaded first.
        "import json, sys, httpx\n"
        "before = set(sys.modules)\n"
        "import sluicegate.client\n"
        "new = set(sys.modules) - before\n"
        "print(json.dumps({'modules': sorted(new)}))\n")
    modules = seen["modules"]
    assert isinstance(modules, list)
    for heavy in ("aiohttp", "prometheus_client", "yaml", "rich", "sluicegate.server",
                  "sluicegate.relay", "sluicegate.router", "sluicegate.client._inprocess"):
        assert heavy not in modules, heavy
    own = [m for m in modules if m == "sluicegate" or m.startswith("sluicegate.")]
    assert len(own) <= 23  # 47 before the SDK stopped importing the gateway


def test_gateway_names_load_on_first_access() -> None:
    seen = _fresh(
        "import json, sys\n"
        "import sluicegate\n"
        "lazy = 'sluicegate.server' not in sys.modules\n"
        "gateway = sluicegate.Gateway\n"
        "print(json.dumps({'lazy': lazy, 'name': gateway.__name__,"
        " 'loaded': 'sluicegate.server' in sys.modules}))\n")
    assert seen == {"lazy": True, "name": "Gateway", "loaded": True}


def test_lazy_names_and_errors() -> None:
    import sluicegate
    from sluicegate.config import GatewayConfig, load_config
    from sluicegate.errors import GatewayError

    assert sluicegate.GatewayConfig is GatewayConfig and sluicegate.load_config is load_config
    assert sluicegate.GatewayError is GatewayError
    assert set(sluicegate.__all__) <= set(dir(sluicegate))
    with pytest.raises(AttributeError):
        _ = sluicegate.nope  # type: ignore[attr-defined]


def test_one_retry_rule_for_both_sides() -> None:
    from sluicegate import retry
    from sluicegate.client import _http
    from sluicegate.client.errors import status_error
    from sluicegate.providers import http

    assert http.retry_after is retry.retry_after  # kept importable for the providers
    assert [s for s in (400, 404, 408, 409, 422, 429, 500, 503, 599)
            if retry.retryable_status(s)] == [408, 409, 429, 500, 503, 599]
    assert retry.retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry.retry_after({"retry-after-ms": "x", "retry-after": "2"}) == 2.0
    assert retry.retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert retry.retry_after({}) is None
    assert _http.retryable(status_error(409, None)) and not _http.retryable(status_error(400, None))
