"""The JavaScript client's own tests (tests/js/, Node's built-in test runner), run by pytest so
``make test`` covers them. Node 18+ is needed; without it the test fails (the README's
prerequisites include Node, which the benchmarks need too)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_node_test_runner_passes() -> None:
    node = shutil.which("node")
    assert node is not None, "node (18 or newer) is needed for the JavaScript client's tests"
    result = subprocess.run([node, "--test", "tests/js/"], cwd=ROOT, capture_output=True,
                            text=True, timeout=240, check=False)
    summary = "\n".join(line for line in result.stdout.splitlines()
                        if line.startswith(("not ok", "# tests", "# pass", "# fail")))
    assert result.returncode == 0, f"node --test failed:\n{result.stdout[-6000:]}{result.stderr}"
    assert "# fail 0" in result.stdout, summary
