"""Stream callbacks: sync or async callables run at the start, per chunk, at the end and on
error of a stream.

``StreamCallbacks(on_start, on_chunk, on_end, on_error)``: ``on_start(metadata)``,
``on_chunk(chunk, metadata)``, ``on_end(metadata)``, ``on_error(error)``. A client's callbacks
run before the call's. In async streams a sync callback is called directly and an async one
awaited. In sync streams every callback runs on the thread consuming the stream (the loop
thread hands it over and waits, so other streams of the client go on), an async one to
completion with ``asyncio.run`` (in a helper thread when that thread already runs a loop).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

__all__ = ["Callback", "StreamCallbacks", "acall_callback", "call_callback"]

Callback = Callable[..., Any]
"""A sync callable, or one returning an awaitable."""


@dataclass(slots=True)
class StreamCallbacks:
    """Each field is None, a sync callable or an async callable."""

    on_start: Callback | None = None
    on_chunk: Callback | None = None
    on_end: Callback | None = None
    on_error: Callback | None = None


async def _await(value: Awaitable[Any]) -> Any:
    return await value


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: list[Any] = []
    errors: list[BaseException] = []

    def main() -> None:
        try:
            box.append(asyncio.run(coro))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=main, name="sluicegate-callback")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return box[0]


def call_callback(fn: Callback, *args: Any) -> Any:
    """Call ``fn(*args)`` from sync code; an awaitable result is run to completion."""
    result = fn(*args)
    if inspect.isawaitable(result):
        return _run(_await(result))
    return result


async def acall_callback(fn: Callback, *args: Any) -> Any:
    """Call ``fn(*args)`` from async code, awaiting an awaitable result."""
    result = fn(*args)
    if inspect.isawaitable(result):
        return await result
    return result


def merged(*sets: StreamCallbacks | None) -> list[StreamCallbacks]:
    """The non-None callback sets, in order (the client's first, then the call's)."""
    return [s for s in sets if s is not None]
