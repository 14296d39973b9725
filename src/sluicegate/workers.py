"""``sluicegate serve --workers N``: N gateway processes on one port.

Each worker is the same ``serve`` command run as its own process, bound with ``SO_REUSEPORT``,
so the kernel spreads new connections over them: one event loop per core. The supervisor (the
process the user started) binds nothing. It forwards SIGINT / SIGTERM to every worker, each of
which drains its streams within ``server.shutdown_grace_s``; if a worker exits on its own, the
supervisor stops the others and exits with status 1. A worker dies with its supervisor (Linux:
``PR_SET_PDEATHSIG``), so none is left behind even if the supervisor is killed.

Workers share state through Redis (``sluicegate.state``): ``serve --workers N`` refuses the
in-process memory backend. Everything else is per worker: its own metrics (``/metrics`` shows the
worker that answered; ``/healthz`` names it by ``pid``) and its own copy of any local model.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

__all__ = ["free_port", "supervise"]

_PR_SET_PDEATHSIG = 1


def free_port(host: str) -> int:
    """A port that is free on ``host`` now, for workers that must all bind the same one."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_supervisor() -> None:
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def supervise(worker_argv: Sequence[str], workers: int, grace_s: float) -> int:
    """Run ``workers`` copies of ``worker_argv`` until a signal or a worker's exit; returns the
    exit status (0 after a clean shutdown). Waits at most ``grace_s + 10`` s for workers to
    stop, then kills them."""
    procs = [subprocess.Popen(list(worker_argv), stdin=subprocess.DEVNULL,
                              preexec_fn=_die_with_supervisor) for _ in range(workers)]
    stopping: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    status = 0
    try:
        while not stopping:
            exited = [p for p in procs if p.poll() is not None]
            if exited:
                status = 1
                sys.stderr.write(f"sluicegate: worker {exited[0].pid} exited with "
                                 f"{exited[0].returncode}; stopping the others\n")
                break
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s + 10
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
                status = 1
            if stopping and p.returncode not in (0, None):
                status = 1
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status
