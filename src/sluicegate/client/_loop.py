"""A private event loop in a daemon thread, for the sync client.

The sync ``Client`` drives the same async transports and streams as ``AsyncClient`` (httpx's
async client, or the gateway's router in-process) on this loop, so both share one
implementation of streaming, retries and timeouts; each call of a sync stream (one chunk, one
``recv``, ``final``...) costs one hop between threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from .errors import ClientClosedError

__all__ = ["LoopThread"]

T = TypeVar("T")


class LoopThread:
    """Started on first use; ``stop()`` runs the pending clean-up, closes the loop, joins."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopped = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._stopped:
                raise ClientClosedError("The client is closed.")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def main() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=main, name="sluicegate-client",
                                                daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    @property
    def running(self) -> bool:
        return self._loop is not None and not self._stopped

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop; the caller waits on the returned future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result (exceptions propagate)."""
        return self.submit(coro).result()

    def stop(self, cleanup: Coroutine[Any, Any, Any] | None = None) -> None:
        """Run ``cleanup`` (if the loop was started), cancel what is left, stop. Idempotent."""
        with self._lock:
            loop, thread = self._loop, self._thread
            already = self._stopped
            self._stopped = True
        if already or loop is None or thread is None:
            if cleanup is not None:
                cleanup.close()
            return

        async def shutdown() -> None:
            try:
                if cleanup is not None:
                    await cleanup
            finally:
                tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await loop.shutdown_asyncgens()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(30)
            loop.close()
