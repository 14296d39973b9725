"""Servers started by tests die with the test process, even when it dies of a segfault.

A stand-in for a crashing pytest starts the gateway's console script the way the tests do
(``preexec_fn=die_with_parent``), waits until it serves, then kills itself with SIGSEGV. The
gateway must be gone moments later: no process, nothing listening on its port.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from bench.procs import die_with_parent

from .fakes import free_port

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).parent / "sluicegate"

CRASHING_PARENT = """
import os, signal, subprocess, sys, time
import httpx
sys.path.insert(0, {root!r})
from bench.procs import die_with_parent

port = {port}
child = subprocess.Popen([{script!r}, "serve", "--port", str(port), "--config", {config!r}],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        if httpx.get(f"http://127.0.0.1:{{port}}/healthz", timeout=1).status_code == 200:
            break
    except httpx.HTTPError:
        time.sleep(0.1)
print(child.pid, flush=True)
os.kill(os.getpid(), signal.SIGSEGV)
"""


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_gateway_dies_when_the_process_that_started_it_segfaults(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("embedded_model: false\n", encoding="utf-8")
    port = free_port()
    parent = subprocess.run(
        [sys.executable, "-c", CRASHING_PARENT.format(root=str(ROOT), port=port,
                                                      script=str(SCRIPT), config=str(config))],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, preexec_fn=die_with_parent)
    assert parent.returncode == -11, parent.stderr  # SIGSEGV, as a crashing pytest
    child = int(parent.stdout.split()[0])
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert not _alive(child), "the gateway outlived the process that started it"
    finally:
        if _alive(child):
            os.kill(child, 9)
    try:
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
        answered = True
    except httpx.HTTPError:
        answered = False
    assert not answered, "something still serves the gateway's port"
