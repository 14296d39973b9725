"""SDK errors, retries and timeouts on loopback: status errors, retries honouring Retry-After,
connection errors, the mid-stream error frame, stall and total timeouts. Sync and async (the
``api`` fixture); what needs only scripted answers goes through ``httpx.MockTransport``."""

from __future__ import annotations

import time

import httpx
import pytest

from sluicegate.client import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    Client,
    InternalServerError,
    NotFoundError,
    RateLimitError,
    SluicegateError,
    StreamError,
)
from sluicegate.client.errors import status_error

from .client_helpers import MESSAGES
from .client_modes import Api, MockUpstream
from .fakes import FakeOpenAIUpstream, Script, ServerThread, free_port

ERROR_BODY = {"error": {"message": "bad field", "type": "invalid_request_error",
                        "param": "temperature", "code": "bad"}}


@pytest.fixture(params=["gateway", "direct"])
def target(request: pytest.FixtureRequest, fake: FakeOpenAIUpstream) -> tuple[str, str]:
    if request.param == "gateway":
        server: ServerThread = request.getfixturevalue("gw")
        return server.url + "/v1", "mock/gpt-test"
    return fake.base_url, "gpt-test"


@pytest.mark.parametrize(("status", "cls"), [(400, BadRequestError), (401, AuthenticationError),
                                             (404, NotFoundError), (429, RateLimitError),
                                             (503, InternalServerError), (418, APIStatusError)])
def test_status_error_classes(status: int, cls: type[APIStatusError]) -> None:
    err = status_error(status, ERROR_BODY, {"X-Request-Id": "req-9", "Retry-After": "2"})
    assert type(err) is cls and isinstance(err, SluicegateError)
    assert (err.status_code, err.message, err.request_id, err.retry_after) == (
        status, "bad field", "req-9", 2.0)
    assert err.body == ERROR_BODY and err.param == "temperature"


def test_status_errors(api: Api, target: tuple[str, str], fake: FakeOpenAIUpstream) -> None:
    base_url, model = target
    fake.queue = [Script(status=400, error_body=ERROR_BODY,
                         error_headers={"x-request-id": "req-1"})]
    with api.open(api.Client(base_url, max_retries=0)) as client:
        with pytest.raises(BadRequestError) as info:
            api.list(client.chat.stream(model=model, messages=MESSAGES))
        assert info.value.status_code == 400 and info.value.message == "bad field"
        assert isinstance(info.value.body, dict)
        if "mock" not in model:
            assert info.value.request_id == "req-1"
        fake.queue = [Script(status=500)]
        with pytest.raises(InternalServerError):
            api.run(client.chat.stream(model=model, messages=MESSAGES).final())
        fake.queue = [Script(status=401, error_body=ERROR_BODY)]
        if "mock" in model:
            # Through the gateway, an upstream 401 is the gateway's credentials failing: 502.
            with pytest.raises(InternalServerError) as gateway_info:
                api.run(client.chat.stream(model=model, messages=MESSAGES).recv())
            assert gateway_info.value.status_code == 502
            assert "refused the gateway's credentials" in gateway_info.value.message
            return
        with pytest.raises(AuthenticationError) as auth:
            api.run(client.chat.stream(model=model, messages=MESSAGES).recv())
        assert auth.value.status_code == 401


def test_unknown_model_on_the_gateway(gw: ServerThread) -> None:
    with Client(gw.url + "/v1") as client, pytest.raises(NotFoundError) as info:
        client.chat.stream(model="nope", messages=MESSAGES).final()
    assert isinstance(info.value.body, dict) and info.value.code == "model_not_found"


def test_retry_after_is_honoured_sync(target: tuple[str, str], fake: FakeOpenAIUpstream) -> None:
    base_url, model = target
    fake.queue = [Script(status=429, error_headers={"Retry-After": "1"}), Script()]
    with Client(base_url, max_retries=2) as client:
        started = time.monotonic()
        s = client.chat.stream(model=model, messages=MESSAGES)
        assert s.final().choices[0].message.content == "Hello, world!"
        assert time.monotonic() - started >= 0.9
    assert len(fake.received) == 2
    if "mock" not in model:
        assert s.stats.attempts == 2


async def test_retry_after_ms_is_honoured_async(target: tuple[str, str],
                                                fake: FakeOpenAIUpstream) -> None:
    base_url, model = target
    fake.queue = [Script(status=503, error_headers={"retry-after-ms": "300"}), Script()]
    async with AsyncClient(base_url, max_retries=1) as client:
        started = time.monotonic()
        completion = await client.chat.stream(model=model, messages=MESSAGES).final()
        assert time.monotonic() - started >= 0.25
    assert completion.choices[0].message.content == "Hello, world!"
    assert len(fake.received) == 2


def test_no_retry_for_400_and_retries_run_out(mock: MockUpstream) -> None:
    mock.queue = [Script(status=400)]
    with Client(mock.base_url, max_retries=3,
                http_client=httpx.Client(transport=httpx.MockTransport(mock.handle))) as client:
        with pytest.raises(BadRequestError):
            client.chat.stream(model="m", messages=MESSAGES).final()
        assert len(mock.received) == 1
        mock.queue = [Script(status=429, error_headers={"retry-after-ms": "10"})] * 5
        with pytest.raises(RateLimitError):
            client.chat.stream(model="m", messages=MESSAGES).final()
    assert len(mock.received) == 1 + 4  # the first try and max_retries=3 retries


def test_connection_error(api: Api) -> None:
    with api.open(api.Client(f"http://127.0.0.1:{free_port()}/v1", max_retries=0)) as client:
        with pytest.raises(APIConnectionError) as info:
            api.run(client.chat.stream(model="m", messages=MESSAGES).final())
        assert not isinstance(info.value, APITimeoutError)
    url = f"http://127.0.0.1:{free_port()}/v1"
    with api.open(api.Client(url, max_retries=1)) as client, pytest.raises(APIConnectionError):
        api.list(client.chat.stream(model="m", messages=MESSAGES))


def test_stream_error_frame(api: Api, target: tuple[str, str], fake: FakeOpenAIUpstream) -> None:
    base_url, model = target
    fake.script = Script(error_after=2)
    seen: list[str] = []
    with api.open(api.Client(base_url)) as client:
        s = client.chat.stream(model=model, messages=MESSAGES)
        with pytest.raises(StreamError) as info:
            api.list(s.text_stream, into=seen)
        assert info.value.partial_text == "Hello," == "".join(seen)
        assert info.value.error is not None and info.value.message
        assert s.stats.finish_reason == "error"
        with pytest.raises(StreamError):  # the failure sticks
            api.run(s.final())
        fake.script = Script(error_after=3)
        with pytest.raises(StreamError) as later:
            api.run(client.chat.stream(model=model, messages=MESSAGES).final())
    assert later.value.partial_text == "Hello, world"


def test_stall_timeout(api: Api, target: tuple[str, str], fake: FakeOpenAIUpstream) -> None:
    base_url, model = target
    fake.script = Script(stall_after=2, stall_s=5)
    with api.open(api.Client(base_url)) as client:
        s = client.chat.stream(model=model, messages=MESSAGES, stall_timeout=0.5)
        texts: list[str] = []
        started = time.monotonic()
        with pytest.raises(APITimeoutError, match="No data"):
            api.list(s.text_stream, into=texts)
        assert time.monotonic() - started < 3
        assert texts == ["Hello", ","]
    assert api.wait_until(lambda: fake.closed_early)


def test_total_timeout(api: Api, target: tuple[str, str], fake: FakeOpenAIUpstream) -> None:
    base_url, model = target
    fake.script = Script(texts=["x"] * 50, gap_s=0.1)
    with api.open(api.Client(base_url, timeout=0.6)) as client:
        started = time.monotonic()
        with pytest.raises(APITimeoutError, match=r"within 0\.6 s"):
            api.run(client.chat.stream(model=model, messages=MESSAGES).final())
        assert time.monotonic() - started < 2
        with pytest.raises(APITimeoutError):  # a per-call timeout overrides the client's
            api.run(client.chat.stream(model=model, messages=MESSAGES, timeout=0.3).final())
        fake.script = Script()
        api.run(client.chat.stream(model=model, messages=MESSAGES, timeout=10).final())
    assert api.wait_until(lambda: fake.closed_early)


async def test_create_timeout_async(gw: ServerThread, fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(first_delay_s=2)
    async with AsyncClient(gw.url + "/v1") as client:
        with pytest.raises(APITimeoutError):
            await client.chat.create(model="mock/m", messages=MESSAGES, timeout=0.3)



def test_dropped_connection(api: Api, target: tuple[str, str], fake: FakeOpenAIUpstream,
                           mock: MockUpstream) -> None:
    """Directly, a drop mid-stream is a connection error; the gateway turns it into its
    error frame (a StreamError carrying the partial text)."""
    base_url, model = target
    fake.script = Script(die_after=2)
    with api.open(api.Client(base_url)) as client, pytest.raises(
            (APIConnectionError, StreamError)) as info:
        api.run(client.chat.stream(model=model, messages=MESSAGES).final())
    if "mock" in model:
        assert isinstance(info.value, StreamError) and info.value.partial_text == "Hello,"
    else:
        assert type(info.value) is APIConnectionError
    mock.script = Script(die_after=1)
    with api.open(api.Client(mock.base_url, http_client=api.http_client(mock))) as client, \
            pytest.raises(APIConnectionError, match="dropped"):
        api.run(client.chat.stream(model="m", messages=MESSAGES).final())
