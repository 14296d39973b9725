"""The benchmark suite runs end to end in smoke mode (tiny loads; no timing assertions)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bench.procs import die_with_parent

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("node") is None, reason="the mock upstream needs node")
def test_bench_suite_smoke() -> None:
    done = subprocess.run([sys.executable, "bench/run.py", "--smoke"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          preexec_fn=die_with_parent)
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads((ROOT / "bench/.work/results.json").read_text())
    assert results["notes"] == ["LiteLLM was not run (--skip-litellm or --smoke)."]
    for scenario in ("streaming", "saturation"):
        for kind in ("direct", "passthrough", "sluicegate"):
            run = results[scenario][kind]
            assert run["errors"] == 0 and run["no_done"] == 0
            assert run["completed"] == run["streams_started"] > 0
        assert results[scenario]["sluicegate"]["cpu_us_per_chunk"] > 0
    for shape in ("64x20ms", "64x0ms", "8x0ms"):
        for kind in ("direct", "passthrough", "sluicegate"):
            run = results["shapes"][shape][kind]
            assert run["errors"] == 0 and run["completed"] == run["streams_started"] > 0
        assert results["shapes"][shape]["sluicegate"]["cpu_us_per_request"] > 0
    assert [r["streams"] for r in results["memory"]["sluicegate"]] == [0, 50, 200]
    assert all(r["errors"] == 0 for r in results["memory"]["sluicegate"])
    assert results["leak"]["errors"] == 0
    assert results["local"]["gateway"]["tokens"] > 0
    report = (ROOT / "bench/.work/benchmarks.md").read_text()
    assert "## Targets" in report and "sluicegate" in report
    assert (ROOT / "bench/.work/benchmarks.png").stat().st_size > 10_000
