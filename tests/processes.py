"""Gateway processes for the tests that need several (``sluicegate serve`` on a free port, its
config written from YAML text, its output in ``serve.log``; it dies with the test run)."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.procs import die_with_parent

from .fakes import free_port
from .test_cli import SCRIPT, subprocess_env, wait_healthy


@dataclass
class Instance:
    proc: subprocess.Popen[bytes]
    url: str
    port: int
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def start_process(tmp: Path, config_yaml: str) -> Instance:
    """``sluicegate serve`` with ``config_yaml`` as its config, in ``tmp``; returns once it
    answers ``/healthz``. The log is appended to, so a restart in the same folder keeps both."""
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "gateway.yaml"
    config.write_text(config_yaml, encoding="utf-8")
    port = free_port()
    log_path = tmp / "serve.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen([str(SCRIPT), "serve", "--port", str(port), "--config",
                                 str(config)], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=subprocess_env(), cwd=tmp,
                                preexec_fn=die_with_parent)
    instance = Instance(proc, f"http://127.0.0.1:{port}", port, log_path)
    wait_healthy(instance.url, proc)
    return instance


def stop(instance: Instance) -> None:
    """SIGTERM, then SIGKILL after 15 s."""
    if instance.proc.poll() is None:
        instance.proc.send_signal(signal.SIGTERM)
        try:
            instance.proc.wait(15)
        except subprocess.TimeoutExpired:
            instance.proc.kill()
            instance.proc.wait(10)
