"""The benchmark suite: sluicegate side by side with a direct baseline, a minimal passthrough and
LiteLLM's proxy, on one machine, in one run. Writes docs/benchmarks.md and docs/benchmarks.png.

Layout on a 2-core machine: the target (gateway or proxy) is pinned to core 0, the mock upstream
and the load generator to core 1 (``taskset``). CPU per streamed chunk is the target's
utime + stime over the load run (``/proc``), divided by the data events the clients received.

Scenarios:
1. streaming: fixed concurrency, 64 chunks 20 ms apart: TTFT, inter-chunk gaps, CPU µs/chunk;
2. saturation: the same with no gap between chunks: the most chunks/s one core delivers;
3. memory: PSS slope over N slow open streams (N = 0, 500, 2,000, 10,000);
4. leak: RSS after 10k streams against after 100k streams;
5. embedded model: tokens/s and TTFT through the gateway against llama-cpp-python directly;
6. shapes: short and long streams at 100 concurrent (64 chunks 20 ms apart, 64 and 8 chunks
   with no gap): CPU per chunk and per request, TTFT p50/p99, each target in turn;
7. dialects: the same stream served as Chat Completions, Anthropic Messages and OpenAI
   Responses by one gateway, alternated: CPU per content chunk and per request, TTFT.

Usage: ``python bench/run.py [--smoke] [--skip-litellm] [--only streaming,memory,...]``.
``--smoke`` runs every scenario tiny, to check that everything works (CI), and writes its report
under bench/.work/ instead of docs/; so does ``--only`` with a subset of the scenarios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procs
import report
from procs import BENCH, LOAD_CORE, ROOT, TARGET_CORE, VENV_BIN, Proc

API_KEY = "sk-bench"
TARGETS = ("direct", "passthrough", "sluicegate", "litellm")
DIALECTS = ("chat", "messages", "responses")
ALL_SCENARIOS = "streaming,saturation,shapes,dialects,memory,leak,local"


class Bench:
    def __init__(self, work: Path, smoke: bool, skip_litellm: bool) -> None:
        self.work = work
        self.smoke = smoke
        self.skip_litellm = skip_litellm
        self.notes: list[str] = []
        self._litellm_python: Path | bool | None = False  # False: not tried yet
        self.fd_limit = procs.raise_fd_limit()

    # -- processes -------------------------------------------------------------------------

    def start_mock(self, chunks: int, gap_ms: int, ttft_ms: int = 0) -> Proc:
        port = procs.free_port()
        mock = procs.spawn("mock", ["node", str(BENCH / "mock_upstream.js"), "--port", str(port),
                                    "--chunks", str(chunks), "--gap-ms", str(gap_ms),
                                    "--ttft-ms", str(ttft_ms)], port, LOAD_CORE, self.work)
        procs.wait_http(f"http://127.0.0.1:{port}/v1/models", mock, 30)
        return mock

    def start_target(self, kind: str, mock: Proc) -> tuple[Proc | None, str, str, str | None]:
        """Returns (process, base URL, model name, API key); None process for 'direct'."""
        upstream = f"http://127.0.0.1:{mock.port}/v1"
        port = procs.free_port()
        if kind == "direct":
            return None, f"http://127.0.0.1:{mock.port}", "mock", None
        if kind == "passthrough":
            proc = procs.spawn(kind, [sys.executable, str(BENCH / "passthrough.py"), "--port",
                                      str(port), "--upstream", upstream], port, TARGET_CORE,
                               self.work)
            procs.wait_http(f"http://127.0.0.1:{port}/", proc, 30)
            return proc, f"http://127.0.0.1:{port}", "mock", None
        if kind == "sluicegate":
            config = self.work / "sluicegate.yaml"
            config.write_text(
                "server:\n"
                f"  api_key: {API_KEY}\n"  # auth on
                "  metrics: true\n"  # metrics on; usage accounting is always on
                "embedded_model: false\n"
                "models:\n"
                "  - name: mock\n"
                "    provider: openai\n"
                f"    base_url: {upstream}\n",
                encoding="utf-8",
            )
            proc = procs.spawn(kind, [str(VENV_BIN / "sluicegate"), "serve", "--config",
                                      str(config), "--port", str(port)], port, TARGET_CORE,
                               self.work)
            procs.wait_http(f"http://127.0.0.1:{port}/healthz", proc, 60)
            return proc, f"http://127.0.0.1:{port}", "mock", API_KEY
        if kind == "litellm":
            import litellm_target

            python = self.litellm_python()
            if python is None:
                raise RuntimeError("LiteLLM could not be installed")
            config = self.work / "litellm.yaml"
            litellm_target.write_config(config, upstream, "mock")
            proc = procs.spawn(kind, litellm_target.command(python, config, port), port,
                               TARGET_CORE, self.work, env=litellm_target.env())
            if not litellm_target.wait_ready(port, 180):
                raise RuntimeError(f"LiteLLM did not start; see {proc.log}")
            return proc, f"http://127.0.0.1:{port}", "mock", None  # master key off, as ours
        raise ValueError(kind)

    @contextlib.contextmanager
    def served(self, kind: str, chunks: int, gap_ms: int) -> Iterator[
        tuple[Proc | None, str, str, str | None]
    ]:
        """A fresh mock upstream and ``kind`` in front of it, both stopped on exit."""
        mock = self.start_mock(chunks, gap_ms)
        proc = None
        try:
            proc, base, model, key = self.start_target(kind, mock)
            yield proc, base, model, key
        finally:
            if proc:
                proc.stop()
            mock.stop()

    def litellm_python(self) -> Path | None:
        if self._litellm_python is False:
            import litellm_target

            self._litellm_python = litellm_target.ensure_venv(BENCH / ".litellm-venv")
        return self._litellm_python if isinstance(self._litellm_python, Path) else None

    def targets(self) -> list[str]:
        kinds = list(TARGETS)
        note = None
        if self.skip_litellm or self.smoke:
            kinds.remove("litellm")
            note = "LiteLLM was not run (--skip-litellm or --smoke)."
        elif self.litellm_python() is None:
            kinds.remove("litellm")
            note = "LiteLLM could not be installed here, so it is not compared."
        if note is not None and note not in self.notes:
            self.notes.append(note)
        return kinds

    # -- load ------------------------------------------------------------------------------

    def load(self, base: str, model: str, key: str | None, *, concurrency: int, streams: int,
             max_seconds: int = 300, tag: str = "load", dialect: str = "chat"
             ) -> dict[str, Any]:
        out = self.work / f"{tag}.json"
        path = {"chat": "/v1/chat/completions", "messages": "/v1/messages",
                "responses": "/v1/responses"}[dialect]
        argv = ["taskset", "-c", LOAD_CORE, sys.executable, str(BENCH / "loadgen.py"),
                "--url", base + path, "--model", model, "--dialect", dialect,
                "--concurrency", str(concurrency), "--streams", str(streams),
                "--max-seconds", str(max_seconds), "--include-usage", "--out", str(out)]
        if key:
            argv += ["--api-key", key]
        subprocess.run(argv, check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
                       timeout=max_seconds + 60, preexec_fn=procs.die_with_parent)
        result: dict[str, Any] = json.loads(out.read_text())
        return result

    def measured_load(self, proc: Proc | None, base: str, model: str, key: str | None,
                      **kwargs: Any) -> dict[str, Any]:
        """A load run with the target's CPU time (s) over it."""
        before = procs.cpu_seconds(proc.pid) if proc else 0.0
        result = self.load(base, model, key, **kwargs)
        after = procs.cpu_seconds(proc.pid) if proc else 0.0
        result["target_cpu_s"] = after - before
        chunks = max(1, int(result["chunks_total"]))
        result["cpu_us_per_chunk"] = (after - before) * 1e6 / chunks if proc else 0.0
        content = max(1, int(result["content_chunks_total"]))
        result["cpu_us_per_content_chunk"] = (after - before) * 1e6 / content if proc else 0.0
        requests = max(1, int(result["completed"]))
        result["cpu_us_per_request"] = (after - before) * 1e6 / requests if proc else 0.0
        return result

    # -- scenarios -------------------------------------------------------------------------

    def streaming(self, gap_ms: int, tag: str) -> dict[str, dict[str, Any]]:
        concurrency, streams, chunks = (10, 40, 8) if self.smoke else (200, 2000, 64)
        results: dict[str, dict[str, Any]] = {}
        for kind in self.targets():
            try:
                with self.served(kind, chunks, gap_ms) as (proc, base, model, key):
                    self.load(base, model, key, concurrency=concurrency,
                              streams=max(concurrency, streams // 10), tag=f"{tag}-{kind}-warm")
                    results[kind] = self.measured_load(proc, base, model, key,
                                                       concurrency=concurrency, streams=streams,
                                                       tag=f"{tag}-{kind}")
            except (RuntimeError, subprocess.SubprocessError) as exc:
                self.notes.append(f"{tag}: {kind} failed: {exc}")
            print(f"[{tag}] {kind}: {summary(results.get(kind))}", file=sys.stderr)
        return results

    def shapes(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Per-request cost shows on short streams: 100 concurrent streams of each shape."""
        concurrency, streams = (10, 40) if self.smoke else (100, 1500)
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for chunks, gap_ms in ((64, 20), (64, 0), (8, 0)):
            name = f"{chunks}x{gap_ms}ms"
            out[name] = {}
            for kind in self.targets():
                try:
                    with self.served(kind, chunks, gap_ms) as (proc, base, model, key):
                        self.load(base, model, key, concurrency=concurrency,
                                  streams=concurrency, tag=f"shape-{name}-{kind}-warm")
                        out[name][kind] = self.measured_load(
                            proc, base, model, key, concurrency=concurrency, streams=streams,
                            tag=f"shape-{name}-{kind}")
                except (RuntimeError, subprocess.SubprocessError) as exc:
                    self.notes.append(f"shapes {name}: {kind} failed: {exc}")
                print(f"[shapes {name}] {kind}: {summary(out[name].get(kind))}",
                      file=sys.stderr)
        return out

    def dialects(self) -> dict[str, list[dict[str, Any]]]:
        """One gateway, the same upstream stream (64 chunks 20 ms apart, 100 concurrent) asked
        for as Chat Completions, Anthropic Messages and OpenAI Responses, alternated in rounds:
        CPU per content chunk (the upstream's tokens; the dialects add lifecycle events) and
        per request, TTFT."""
        concurrency, streams, rounds = (10, 40, 1) if self.smoke else (100, 1500, 2)
        out: dict[str, list[dict[str, Any]]] = {d: [] for d in DIALECTS}
        try:
            with self.served("sluicegate", 64, 20) as (proc, base, model, key):
                for dialect in DIALECTS:
                    self.load(base, model, key, concurrency=concurrency, streams=concurrency,
                              tag=f"dialect-{dialect}-warm", dialect=dialect)
                for r in range(rounds):
                    for dialect in DIALECTS:
                        result = self.measured_load(proc, base, model, key,
                                                    concurrency=concurrency, streams=streams,
                                                    tag=f"dialect-{dialect}-{r}",
                                                    dialect=dialect)
                        out[dialect].append(result)
                        print(f"[dialects {r}] {dialect}: {summary(result)}", file=sys.stderr)
        except (RuntimeError, subprocess.SubprocessError) as exc:
            self.notes.append(f"dialects failed: {exc}")
        return out

    def memory(self) -> dict[str, list[dict[str, Any]]]:
        levels = [0, 50, 200] if self.smoke else [0, 500, 2000, 10000]
        # A proxy holds two sockets per stream (client and upstream); where the open-file
        # limit cannot be raised far enough, the top level is what fits, and the report says so.
        fits = (self.fd_limit - 200) // 2
        if levels[-1] > fits:
            self.notes.append(f"memory: the open-file limit here is {self.fd_limit} and could not "
                              f"be raised, so the top level is {fits:,} streams, not "
                              f"{levels[-1]:,} (two sockets per proxied stream).")
            levels[-1] = fits
        out: dict[str, list[dict[str, Any]]] = {}
        for kind in ("passthrough", "sluicegate"):
            try:
                with self.served(kind, 100000, 10000) as (proc, base, model, key):
                    assert proc is not None
                    self.hold(proc, base, model, key, 20)  # warm-up (streams never end here)
                    rows = []
                    for n in levels:
                        rows.append(self.hold(proc, base, model, key, n))
                        print(f"[memory] {kind} {rows[-1]}", file=sys.stderr)
                    out[kind] = rows
            except (RuntimeError, subprocess.SubprocessError) as exc:
                self.notes.append(f"memory: {kind} failed: {exc}")
        return out

    def hold(self, proc: Proc, base: str, model: str, key: str | None, n: int) -> dict[str, Any]:
        if n == 0:
            time.sleep(1.0)
            return {"streams": 0, **procs.memory_kib(proc.pid), "errors": 0}
        out = self.work / f"hold-{n}.json"
        argv = ["taskset", "-c", LOAD_CORE, sys.executable, str(BENCH / "loadgen.py"),
                "--url", base + "/v1/chat/completions", "--model", model, "--concurrency",
                str(n), "--streams", str(n), "--hold", "--max-seconds", "300", "--out", str(out)]
        if key:
            argv += ["--api-key", key]
        gen = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, preexec_fn=procs.die_with_parent)
        assert gen.stdin is not None and gen.stdout is not None
        line = gen.stdout.readline()
        held = int(line.split()[1]) if line.startswith("holding") else 0
        time.sleep(1.0)
        mem = procs.memory_kib(proc.pid)
        gen.stdin.write("release\n")
        gen.stdin.close()
        gen.wait(120)
        result = json.loads(out.read_text())
        time.sleep(1.0)
        # Held streams are closed by the client, so only errors count (no [DONE] is expected).
        return {"streams": n, "held": held, **mem, "errors": result.get("errors", 0)}

    def leak(self) -> dict[str, Any]:
        first, total = (500, 2000) if self.smoke else (10000, 100000)
        with self.served("sluicegate", 4, 0) as (proc, base, model, key):
            assert proc is not None
            a = self.load(base, model, key, concurrency=200, streams=first, tag="leak-a")
            rss_a = procs.memory_kib(proc.pid)
            b = self.load(base, model, key, concurrency=200, streams=total - first, tag="leak-b")
            rss_b = procs.memory_kib(proc.pid)
        return {"first": first, "total": total, "rss_first_kib": rss_a["rss"],
                "rss_total_kib": rss_b["rss"], "errors": a["errors"] + b["errors"],
                "completed": a["completed"] + b["completed"]}

    def local_model(self) -> dict[str, Any] | None:
        argv = [sys.executable, str(BENCH / "local_model.py"), "--json"]
        argv += ["--rounds", "1", "--max-tokens", "16"] if self.smoke else ["--rounds", "5"]
        try:
            done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=True,
                                  timeout=900, preexec_fn=procs.die_with_parent)
        except (subprocess.SubprocessError, OSError) as exc:
            self.notes.append(f"embedded model benchmark failed: {exc}")
            return None
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result


def summary(r: dict[str, Any] | None) -> str:
    if not r:
        return "failed"
    return (f"{r['completed']} ok, {r['errors']} errors, {r['chunks_per_s']:.0f} chunks/s, "
            f"TTFT p50 {r['ttft_ms']['p50']:.1f} ms, {r.get('cpu_us_per_chunk', 0):.1f} µs/chunk")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny runs; report under bench/.work")
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument("--only", default=ALL_SCENARIOS,
                        help="comma-separated scenarios; a subset writes its report under "
                        "bench/.work, not docs/")
    args = parser.parse_args()
    work = BENCH / ".work"
    work.mkdir(exist_ok=True)
    bench = Bench(work, args.smoke, args.skip_litellm)
    only = set(args.only.split(","))
    started = time.time()
    results: dict[str, Any] = {"smoke": args.smoke, "command": " ".join(sys.argv)}
    if "streaming" in only:
        results["streaming"] = bench.streaming(20, "streaming")
    if "saturation" in only:
        results["saturation"] = bench.streaming(0, "saturation")
    if "shapes" in only:
        results["shapes"] = bench.shapes()
    if "dialects" in only:
        results["dialects"] = bench.dialects()
    if "memory" in only:
        results["memory"] = bench.memory()
    if "leak" in only:
        results["leak"] = bench.leak()
    if "local" in only:
        results["local"] = bench.local_model()
    results["notes"] = bench.notes
    results["seconds"] = time.time() - started
    (work / "results.json").write_text(json.dumps(results, indent=1, default=str))
    docs = work if args.smoke or only != set(ALL_SCENARIOS.split(",")) else ROOT / "docs"
    report.write(results, docs / "benchmarks.md", docs / "benchmarks.png")
    print(f"wrote {docs / 'benchmarks.md'} in {results['seconds']:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
