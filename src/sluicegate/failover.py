"""Opening a stream that survives: retries, fallbacks and the first-token timeout.

Nothing reaches the client before the first content, so any failure until then can be hidden:
``open_first_content`` tries each target of the chain in order, each up to ``1 + max_retries``
times, and returns the first attempt that produced content (text, a tool call, reasoning, or a
``length`` / ``tool_calls`` / ``content_filter`` finish), with the batches read so far.

What moves on (retry, then the next target): a connect error, a dropped connection, HTTP 408,
409, 429 or 5xx, a first-token timeout (``Timeouts.first_token``, s, per attempt), a stream that
ends before any content, and a local engine whose queue is full. Anything else (400, 401, 403,
404, a context-length error) is the client's to see at once. Backoff is exponential with jitter
(tenacity), starting at ``retry_initial_s``; a ``Retry-After`` / ``retry-after-ms`` from the
upstream is honoured, both capped at ``retry_max_wait_s``.

The last attempt of the chain is never failed for ending without content: an empty answer is
still an answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import cast

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from .chunks import Chunk
from .errors import (
    GatewayError,
    ModelNotFoundError,
    RateLimitError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeoutError,
    bad_shape,
)
from .policy import Policy
from .providers.base import ChunkStream, Target
from .retry import retryable_status
from .schemas import ChatRequest, CompletionRequest

__all__ = ["EmptyStreamError", "Opened", "has_content", "open_first_content", "opener",
           "retryable"]

log = logging.getLogger("sluicegate.failover")

_CONTENT_FINISH = frozenset({"length", "tool_calls", "content_filter", "function_call"})


class EmptyStreamError(UpstreamError):
    """The upstream ended its stream before any content."""

    code = "empty_stream"


@dataclass(slots=True)
class Opened:
    """A stream past its first content: ``pending`` holds every batch read so far, in order;
    ``iterator`` continues after them. ``attempts`` counts tries over the whole chain."""

    stream: ChunkStream
    iterator: AsyncIterator[list[Chunk]]
    pending: list[list[Chunk]]
    target: Target
    attempts: int
    ended: bool = False  # the stream already ended (a short or empty answer)


def has_content(chunk: Chunk) -> bool:
    """True for a chunk that would show the client something (OpenAI chunk shape)."""
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta")
        if delta:
            if (delta.get("content") or delta.get("tool_calls")
                    or delta.get("reasoning_content") or delta.get("refusal")):
                return True
        elif choice.get("text"):
            return True
        if choice.get("finish_reason") in _CONTENT_FINISH:
            return True
    return False


def retryable(exc: BaseException) -> bool:
    """Whether a failure before the first token may be retried or moved past."""
    if isinstance(exc, UpstreamStatusError):
        return retryable_status(exc.status)
    return isinstance(exc, (UpstreamError, RateLimitError, TimeoutError))


class _Attempt:
    """The one field of tenacity's ``RetryCallState`` its wait strategies read."""

    __slots__ = ("attempt_number",)

    def __init__(self, attempt_number: int) -> None:
        self.attempt_number = attempt_number


def _delay(policy: Policy, exc: BaseException | None, failed_attempts: int) -> float:
    """Seconds before the next try: the upstream's Retry-After if any, else exponential
    backoff with jitter (tenacity's ``wait_exponential_jitter``); both capped."""
    after = getattr(exc, "retry_after", None)
    if isinstance(after, (int, float)) and after > 0:
        return float(min(after, policy.retry_max_wait_s))
    backoff = wait_exponential_jitter(multiplier=policy.retry_initial_s,
                                      max=policy.retry_max_wait_s, jitter=policy.retry_initial_s)
    state = cast(RetryCallState, _Attempt(failed_attempts))
    return float(min(backoff(state), policy.retry_max_wait_s))


def _wait(policy: Policy) -> Callable[[RetryCallState], float]:
    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        # The retry loop starts after the first, direct try: its attempt n is try n + 1.
        return _delay(policy, exc, state.attempt_number + 1)

    return wait


OpenFn = Callable[[Target], Awaitable[ChunkStream]]


def opener(req: ChatRequest | CompletionRequest, policy: Policy) -> OpenFn:
    """Opens ``req`` on one target: chat or text, with the policy's limit on malformed events.

    ``timeouts.connect`` (s) bounds the TCP connect and TLS handshake only (the provider raises
    ``UpstreamTimeoutError`` code ``connect_timeout``). An upstream that accepted the connection
    but is slow to send its status and headers (a model loading, a queue) is inside the attempt's
    ``first_token`` limit, and keep-alives flow meanwhile."""
    connect = policy.timeouts.connect
    max_malformed = policy.max_malformed
    max_event_bytes = policy.max_event_bytes

    async def open_one(target: Target) -> ChunkStream:
        if isinstance(req, ChatRequest):
            chunks = await target.provider.open_chat(req, target, connect_s=connect)
        else:
            chunks = await target.provider.open_text(req, target, connect_s=connect)
        chunks.max_malformed = max_malformed
        chunks.max_event_bytes = max_event_bytes
        return chunks

    return open_one


async def _attempt(open_fn: OpenFn, target: Target, policy: Policy, attempts: int,
                   last: bool) -> Opened:
    stream: ChunkStream | None = None
    try:
        async with asyncio.timeout(policy.timeouts.first_token):
            stream = await open_fn(target)
            iterator = aiter(stream)
            pending: list[list[Chunk]] = []
            while True:
                try:
                    batch = await anext(iterator)
                except StopAsyncIteration:
                    if last:
                        return Opened(stream, iterator, pending, target, attempts, ended=True)
                    raise EmptyStreamError(
                        "The upstream ended the stream before any content.") from None
                pending.append(batch)
                try:
                    found = any(has_content(chunk) for chunk in batch)
                except (KeyError, TypeError, AttributeError) as exc:  # a chunk's shape is wrong
                    raise bad_shape(exc) from None
                if found:
                    return Opened(stream, iterator, pending, target, attempts)
    except TimeoutError:
        if stream is not None:
            await stream.aclose()
        raise UpstreamTimeoutError(
            f"No first token from {target.provider.name} within "
            f"{policy.timeouts.first_token} s.", code="first_token_timeout") from None
    except BaseException:
        if stream is not None:
            await stream.aclose()
        raise


async def open_first_content(open_fn: OpenFn, chain: list[Target | GatewayError],
                             policy: Policy) -> Opened:
    """Try ``chain`` in order (a ``GatewayError`` entry is a fallback that could not be
    resolved, e.g. its provider has no key, and is skipped), at most ``policy.max_attempts``
    tries in all. Raises the last failure."""
    attempts = 0
    failure: BaseException | None = None
    usable = [t for t in chain if isinstance(t, Target)]
    for entry in chain:
        if isinstance(entry, GatewayError):
            failure = failure or entry
            continue
        if attempts >= policy.max_attempts:
            log.warning("request stopped after %d upstream attempts (routing.max_attempts)",
                        attempts)
            break
        target = entry
        is_last_target = target is usable[-1]
        tries = min(1 + policy.max_retries, policy.max_attempts - attempts)
        # The first try runs directly: the retry loop costs ~45 µs a request, so it is only
        # built once a try has failed.
        try:
            attempts += 1
            return await _attempt(open_fn, target, policy, attempts,
                                  last=(is_last_target and tries == 1)
                                  or attempts == policy.max_attempts)
        except Exception as exc:
            if not retryable(exc) or isinstance(exc, ModelNotFoundError):
                raise
            failure = exc
        tried = 1
        if tries > 1:
            await asyncio.sleep(_delay(policy, failure, 1))
            retrying = AsyncRetrying(
                stop=stop_after_attempt(tries - 1),
                wait=_wait(policy),
                retry=retry_if_exception(retryable),
                reraise=True,
            )
            try:
                async for attempt in retrying:
                    with attempt:
                        attempts += 1
                        tried += 1
                        last = ((is_last_target and tried == tries)
                                or attempts == policy.max_attempts)
                        return await _attempt(open_fn, target, policy, attempts, last)
            except Exception as exc:
                if not retryable(exc):
                    raise
                failure = exc
        log.warning("deployment %s failed before the first token after %d attempt(s): %s",
                    target.provider.name, tried, failure)
    assert failure is not None
    raise failure
