"""Every ```python example in the README runs, as a user would run it, against a gateway on the
real embedded model (``SLUICEGATE_BASE_URL`` points the examples' ``Client()`` at it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from bench.procs import die_with_parent

from sluicegate.server import Gateway

from .fakes import ServerThread

README = Path(__file__).resolve().parent.parent / "README.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
SDK_EXAMPLES = [e for e in EXAMPLES if "sluicegate.client" in e]


def test_the_readme_has_each_sdk_example() -> None:
    text = "\n".join(SDK_EXAMPLES)
    for marker in ("ChatRequestBuilder", "StreamCallbacks", "RichProgress", "@stream_llm",
                   "task.cancel()", "run_many", "Client.in_process()"):
        assert marker in text, marker


@pytest.mark.parametrize("example", SDK_EXAMPLES,
                         ids=[f"example{i}" for i in range(len(SDK_EXAMPLES))])
def test_readme_example_runs(example: str, local_gateway: tuple[ServerThread, Gateway],
                             tmp_path: Path) -> None:
    server, _ = local_gateway
    script = tmp_path / "example.py"
    script.write_text(example, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICEGATE_")}
    env["SLUICEGATE_BASE_URL"] = server.url + "/v1"
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            env=env, timeout=120, cwd=tmp_path, preexec_fn=die_with_parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip(), "the example printed nothing"
    assert "Traceback" not in result.stderr
    assert "closed: False" not in result.stdout
