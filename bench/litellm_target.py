"""LiteLLM's proxy as a comparison target for the gateway benchmarks.

LiteLLM is installed into its own venv (``bench/.litellm-venv``, git-ignored), never into the
project's, from the fully pinned ``bench/litellm_requirements.txt`` (``litellm[proxy]==1.108.7``;
falls back to that single pin when the file is missing). The proxy runs in its leanest
comparable configuration: one uvicorn worker on 127.0.0.1, no master key (no auth lookups), no
database, no callbacks, no background health checks, spend logs/updates off, bundled model cost
map (no network fetch at import), error-level logging.

Usage from a benchmark::

    python = ensure_venv()                     # None when LiteLLM cannot be installed
    write_config(cfg, "http://127.0.0.1:9000/v1", model="mock")
    proc = start(python, cfg, port)            # or Popen(command(...), env={**os.environ, **env()})
    try:
        assert wait_ready(port, proc=proc)
        ...                                    # POST http://127.0.0.1:<port>/v1/chat/completions
    finally:
        stop(proc)

``python bench/litellm_target.py`` (with the project venv's python) installs if needed, starts a
tiny in-process OpenAI-style streaming mock, streams chat completions through LiteLLM with httpx
and with the ``openai`` SDK, prints what arrived and when, and stops everything.

Things to know when comparing (measured with 1.108.7 on the 2-core machine):

- install ~1-1.6 min, ~750 MB; start-up to ready ~9-13 s (more when the machine is busy);
- the first request after start-up takes ~0.8-1.1 s (lazy imports): warm up before measuring;
- LiteLLM re-parses every upstream chunk into pydantic objects and re-serialises it (it drops
  ``"finish_reason": null`` from content chunks), always asks the upstream for
  ``stream_options.include_usage`` (forwarding the usage chunk only when the client asked), and
  at the end of each stream rebuilds the whole response and computes its cost before sending
  ``data: [DONE]`` (~20-30 ms after the last chunk when idle); a dozen built-in proxy hooks
  (parallel-request limiter, budget limiters, cache-control check, ...) still run per request
  with this config (no setting found that removes them);
- upstream connections are pooled and kept alive (one connection served 30 sequential
  requests); a client disconnect closes the upstream stream within ~0.1 s.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

LITELLM_VERSION = "1.108.7"
LITELLM_SPEC = f"litellm[proxy]=={LITELLM_VERSION}"

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_VENV = BENCH_DIR / ".litellm-venv"  # = bench/.litellm-venv, whatever the cwd
REQUIREMENTS = BENCH_DIR / "litellm_requirements.txt"
MARKER_NAME = ".sluicegate-litellm-installed"
INSTALL_TIMEOUT_S = 1200.0

# No master key: LiteLLM then skips key lookup/auth entirely (user_api_key_auth returns a default
# UserAPIKeyAuth at once); since 1.108 that needs dangerously_permit_weak_or_unset_master_key in
# the config. Clients may send any bearer token or none; the upstream always gets
# DUMMY_UPSTREAM_KEY.
MASTER_KEY: str | None = None
DUMMY_UPSTREAM_KEY = "sk-sluicegate-bench-dummy"


def _log(msg: str) -> None:
    print(f"[litellm_target] {msg}", file=sys.stderr, flush=True)


def _venv_python(venv_dir: Path) -> Path:
    return venv_dir / "bin" / "python"


def _install_fingerprint() -> str:
    """What the marker records: the spec and the lock file's hash (editing either reinstalls)."""
    h = hashlib.sha256(LITELLM_SPEC.encode())
    if REQUIREMENTS.is_file():
        h.update(REQUIREMENTS.read_bytes())
    return f"{LITELLM_SPEC} {h.hexdigest()[:16]}"


def _installed_ok(venv_dir: Path) -> bool:
    marker = venv_dir / MARKER_NAME
    try:
        return (_venv_python(venv_dir).exists()
                and marker.read_text().strip() == _install_fingerprint())
    except OSError:
        return False


@contextlib.contextmanager
def _install_lock(venv_dir: Path) -> Iterator[None]:
    import fcntl

    venv_dir.mkdir(parents=True, exist_ok=True)
    with open(venv_dir / ".install.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run_logged(argv: list[str], log: IO[str], timeout: float) -> bool:
    log.write(f"$ {' '.join(argv)}\n")
    log.flush()
    try:
        subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                       timeout=timeout, check=True,
                       env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
        return True
    except subprocess.TimeoutExpired:
        log.write(f"!! timed out after {timeout:.0f}s\n")
    except (subprocess.CalledProcessError, OSError) as e:
        log.write(f"!! {e}\n")
    return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    # pip's "Location ... is ignored" warnings for this machine's extra local indexes are noise.
    text = [ln for ln in text if "is ignored: it is neither a file nor a directory" not in ln]
    return "\n".join(ln if len(ln) <= 400 else ln[:400] + " …" for ln in text[-lines:])


def ensure_venv(venv_dir: Path = DEFAULT_VENV) -> Path | None:
    """Create ``venv_dir`` with LiteLLM's proxy in it unless already done; return its python.

    Idempotent and fast once installed (a marker file records the installed spec + lock hash).
    Returns None, after saying why on stderr, when the install fails; never raises for that.
    A relative ``venv_dir`` is taken relative to the project root.
    """
    venv_dir = Path(venv_dir)
    if not venv_dir.is_absolute():
        venv_dir = BENCH_DIR.parent / venv_dir
    if _installed_ok(venv_dir):
        return _venv_python(venv_dir)
    try:
        with _install_lock(venv_dir):
            if _installed_ok(venv_dir):  # another process finished it meanwhile
                return _venv_python(venv_dir)
            return _install(venv_dir)
    except Exception as e:  # an install problem must not break the benchmark run
        _log(f"LiteLLM install failed: {type(e).__name__}: {e}")
        return None


def _install(venv_dir: Path) -> Path | None:
    python = _venv_python(venv_dir)
    marker = venv_dir / MARKER_NAME
    marker.unlink(missing_ok=True)
    start = time.monotonic()
    log_path = venv_dir / "install.log"  # inside the (git-ignored) venv dir
    _log(f"installing {LITELLM_SPEC} into {venv_dir} (takes ~1 min; log: {log_path})")
    with open(log_path, "w") as log:
        # sys.executable may itself be a venv's python; `-m venv` then builds on its base install.
        ok = python.exists() or _run_logged([sys.executable, "-m", "venv", str(venv_dir)], log, 120)
        if ok:
            req = (["-r", str(REQUIREMENTS)] if REQUIREMENTS.is_file() else [LITELLM_SPEC])
            ok = _run_logged([str(python), "-m", "pip", "install", "--quiet", *req], log,
                             INSTALL_TIMEOUT_S)
        if ok:  # the pin really landed and the proxy's import-time dependencies are there
            check = ("import importlib.metadata as m, uvicorn, fastapi, yaml, litellm; "
                     f"v = m.version('litellm'); assert v == {LITELLM_VERSION!r}, v")
            ok = _run_logged([str(python), "-c", check], log, 300)
    if not ok:
        _log(f"LiteLLM install into {venv_dir} failed after {time.monotonic() - start:.0f}s; "
             f"last lines of {log_path}:\n{_tail(log_path)}")
        return None
    marker.write_text(_install_fingerprint() + "\n")
    _log(f"installed {LITELLM_SPEC} in {time.monotonic() - start:.1f}s")
    return python


def write_config(path: Path, upstream_base_url: str, model: str = "mock", *,
                 master_key: str | None = MASTER_KEY) -> None:
    """Write a lean LiteLLM proxy config routing client model ``model`` to ``upstream_base_url``.

    Without ``master_key`` (the default, like sluicegate's ``server.api_key: null``) the proxy
    runs with auth off, which LiteLLM >= 1.108 refuses to do unless
    ``dangerously_permit_weak_or_unset_master_key`` is set. With one (it must start with ``sk-``),
    clients must send ``Authorization: Bearer <master_key>``.

    ``openai/<model>`` makes LiteLLM use its OpenAI-compatible provider against ``api_base``; the
    upstream sees model name ``model``. Zero per-token costs in ``model_info`` register pricing
    for the deployment, so LiteLLM's per-request cost calculation resolves to 0 directly.
    """
    q = json.dumps  # JSON strings are valid YAML scalars: no yaml library needed here
    if master_key is None:  # auth off: user_api_key_auth returns a default identity at once
        auth = "dangerously_permit_weak_or_unset_master_key: true"
    else:
        auth = f"master_key: {q(master_key)}"
    text = f"""\
# LiteLLM proxy config for the sluicegate comparison benchmark (written by bench/litellm_target.py).
model_list:
  - model_name: {q(model)}
    litellm_params:
      model: {q("openai/" + model)}
      api_base: {q(upstream_base_url)}
      api_key: {q(DUMMY_UPSTREAM_KEY)}
      stream_timeout: 600
      timeout: 600
      max_retries: 0
    model_info:
      input_cost_per_token: 0
      output_cost_per_token: 0

litellm_settings:
  callbacks: []
  success_callback: []
  failure_callback: []
  set_verbose: false
  json_logs: false
  turn_off_message_logging: true
  num_retries: 0
  request_timeout: 600

router_settings:
  routing_strategy: simple-shuffle
  num_retries: 0
  enable_pre_call_checks: false

general_settings:
  {auth}
  # no database_url: no Prisma, no spend tables, no key/team/budget lookups
  store_model_in_db: false
  disable_spend_logs: true
  disable_spend_updates: true
  disable_error_logs: true
  disable_reset_budget: true
  background_health_checks: false
"""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)


def command(venv_python: Path, config: Path, port: int) -> list[str]:
    """argv starting the proxy: one uvicorn worker (uvloop) on 127.0.0.1:``port``."""
    litellm_cli = Path(venv_python).parent / "litellm"
    return [str(litellm_cli), "--config", str(config), "--host", "127.0.0.1",
            "--port", str(port), "--num_workers", "1"]


def env() -> dict[str, str]:
    """Environment overrides for the proxy process (merge over ``os.environ``; see ``start``)."""
    return {
        "LITELLM_LOG": "ERROR",  # litellm's loggers and uvicorn's level (so no access log)
        "LITELLM_MODE": "PRODUCTION",  # don't load a .env file from the cwd
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # bundled cost map, no fetch at import
        "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
        "LITELLM_LOCAL_BLOG_POSTS": "True",
        "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
        "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
        "LITELLM_DONT_SHOW_FEEDBACK_BOX": "True",
        "DISABLE_ADMIN_UI": "True",
        "NO_DOCS": "True",
        "NO_REDOC": "True",
        # LiteLLM's shared aiohttp upstream pool defaults to limit=1000, limit_per_host=500 (0 would
        # mean aiohttp's default of 100): lift it like sluicegate's TCPConnector(limit=0), so that
        # hundreds of concurrent long streams to the one mock upstream never queue for a connection.
        "AIOHTTP_CONNECTOR_LIMIT": "100000",
        "AIOHTTP_CONNECTOR_LIMIT_PER_HOST": "100000",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "PYTHONUNBUFFERED": "1",
    }


# Variables that would switch on a database, Redis, a master key or a remote config: dropped from
# the inherited environment so the proxy stays lean whatever the caller's shell has.
_DROP_VARS = ("DATABASE_URL", "DIRECT_URL", "DATABASE_URL_READ_REPLICA", "DATABASE_HOST",
              "LITELLM_MASTER_KEY", "LITELLM_SALT_KEY", "REDIS_HOST", "REDIS_URL", "REDIS_PORT",
              "REDIS_PASSWORD", "STORE_MODEL_IN_DB", "LITELLM_CONFIG_BUCKET_NAME",
              "CONFIG_FILE_PATH", "WORKER_CONFIG", "PORT", "HOST", "NUM_WORKERS",
              "LITELLM_ENABLE_PYROSCOPE")


def proxy_env() -> dict[str, str]:
    """The proxy's full environment: ``os.environ`` less ``_DROP_VARS``, plus ``env()``."""
    base = {k: v for k, v in os.environ.items() if k not in _DROP_VARS}
    return {**base, **env()}


def start(venv_python: Path, config: Path, port: int,
          log_path: Path | None = None) -> subprocess.Popen[bytes]:
    """Start the proxy in its own process group; its output goes to ``log_path`` (or nowhere)."""
    with contextlib.ExitStack() as stack:
        out: Any = (stack.enter_context(open(log_path, "wb")) if log_path is not None
                    else subprocess.DEVNULL)
        return subprocess.Popen(command(venv_python, config, port), env=proxy_env(),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop(proc: subprocess.Popen[Any], timeout_s: float = 15) -> None:
    """Stop a process started by ``start`` (SIGTERM to its group, SIGKILL after ``timeout_s``)."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)  # start_new_session=True: the group id is the proxy's pid
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def wait_ready(port: int, timeout_s: float = 120, proc: subprocess.Popen[Any] | None = None,
               api_key: str | None = MASTER_KEY) -> bool:
    """Poll until the proxy answers GET /health/liveliness and lists models on GET /v1/models.

    Bounded by ``timeout_s``; returns False at once if ``proc`` is given and has exited. Pass the
    master key as ``api_key`` when the config has one (/v1/models needs it then).
    """
    deadline = time.monotonic() + timeout_s
    base = f"http://127.0.0.1:{port}"
    models = urllib.request.Request(
        base + "/v1/models", headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(base + "/health/liveliness", timeout=2) as r:
                if r.status == 200:
                    with urllib.request.urlopen(models, timeout=5) as m:
                        if m.status == 200 and json.loads(m.read()).get("data"):
                            return True
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(0.2)
    return False


# --------------------------------------------------------------------------------------------
# __main__: end-to-end check against a tiny in-process mock upstream.

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _MockUpstream:
    """Minimal OpenAI-compatible streaming /v1/chat/completions (aiohttp), run in a thread.

    Streams ``n_chunks`` one-word deltas ``delay_s`` apart, a finish chunk, a usage chunk when
    ``stream_options.include_usage`` is asked for, then ``data: [DONE]``. Records each request body.
    """

    def __init__(self, port: int, n_chunks: int = 8, delay_s: float = 0.1) -> None:
        self.port, self.n_chunks, self.delay_s = port, n_chunks, delay_s
        self.requests: list[dict[str, Any]] = []
        self._loop: Any = None
        self._runner: Any = None

    async def _chat(self, request: Any) -> Any:
        import asyncio

        from aiohttp import web

        body = await request.json()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.requests.append({"path": request.path, "auth": request.headers.get("Authorization"),
                              "client_port": peer[1] if peer else None, "body": body})
        model = body.get("model", "mock")
        base = {"id": "chatcmpl-mock", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": model}

        def frame(obj: dict[str, Any]) -> bytes:
            return b"data: " + json.dumps(obj).encode() + b"\n\n"

        if not body.get("stream"):
            text = " ".join(f"word{i}" for i in range(self.n_chunks))
            return web.json_response({
                "id": "chatcmpl-mock", "object": "chat.completion", "created": base["created"],
                "model": model, "choices": [{"index": 0, "finish_reason": "stop",
                                             "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": self.n_chunks,
                          "total_tokens": 5 + self.n_chunks}})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
        await resp.prepare(request)
        record = self.requests[-1]
        record["outcome"] = "streaming"
        i = 0
        try:
            for i in range(self.n_chunks):
                delta: dict[str, str] = {"content": f"word{i} "}
                if i == 0:
                    delta["role"] = "assistant"
                await resp.write(frame({**base, "choices": [{"index": 0, "delta": delta,
                                                             "finish_reason": None}]}))
                await asyncio.sleep(self.delay_s)
        except ConnectionError:  # the proxy closed its upstream stream (its client went away)
            record["outcome"] = f"peer gone after {i + 1} chunks"
            return resp
        except asyncio.CancelledError:
            record["outcome"] = f"cancelled after {i + 1} chunks"
            raise
        record["outcome"] = "completed"
        await resp.write(frame({**base, "choices": [{"index": 0, "delta": {},
                                                     "finish_reason": "stop"}]}))
        if (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(frame({**base, "choices": [], "usage": {
                "prompt_tokens": 5, "completion_tokens": self.n_chunks,
                "total_tokens": 5 + self.n_chunks}}))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _models(self, request: Any) -> Any:
        from aiohttp import web

        return web.json_response({"object": "list", "data": [{"id": "mock", "object": "model"}]})

    def __enter__(self) -> _MockUpstream:
        import asyncio
        import threading

        from aiohttp import web

        ready = threading.Event()

        async def serve() -> None:
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self._chat)
            app.router.add_get("/v1/models", self._models)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
            ready.set()

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(serve(), self._loop).result(timeout=10)
        ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


def _stream_httpx(url: str, model: str) -> list[tuple[float, str]]:
    import httpx

    body = {"model": model, "stream": True,
            "messages": [{"role": "user", "content": "Say something."}]}
    out: list[tuple[float, str]] = []
    start = time.perf_counter()
    with httpx.Client(timeout=60) as client, \
            client.stream("POST", url + "/v1/chat/completions", json=body,
                          headers={"Authorization": "Bearer anything"}) as r:
        print(f"HTTP {r.status_code} content-type={r.headers.get('content-type')}")
        r.raise_for_status()
        for line in r.iter_lines():
            if line:
                out.append((time.perf_counter() - start, line))
    return out


def _stream_openai_sdk(url: str, model: str) -> list[tuple[float, Any]]:
    from openai import OpenAI

    client = OpenAI(base_url=url + "/v1", api_key="anything", max_retries=0, timeout=60)
    out: list[tuple[float, Any]] = []
    start = time.perf_counter()
    try:
        stream = client.chat.completions.create(
            model=model, stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "Say something."}])
        for chunk in stream:
            out.append((time.perf_counter() - start, chunk))
    finally:
        client.close()
    return out


def main() -> int:
    import tempfile

    t0 = time.monotonic()
    python = ensure_venv()
    if python is None:
        print("LiteLLM is not available; see the messages above.", file=sys.stderr)
        return 1
    print(f"venv ready: {python} ({time.monotonic() - t0:.1f}s)")

    n_chunks, delay_s = 8, 0.1
    upstream_port, proxy_port = _free_port(), _free_port()
    with tempfile.TemporaryDirectory(prefix="litellm-target-") as tmp, \
            _MockUpstream(upstream_port, n_chunks=n_chunks, delay_s=delay_s) as mock:
        cfg = Path(tmp) / "litellm.yaml"
        write_config(cfg, f"http://127.0.0.1:{upstream_port}/v1", model="mock")
        log_path = Path(tmp) / "litellm.log"
        t1 = time.monotonic()
        proc = start(python, cfg, proxy_port, log_path)
        try:
            if not wait_ready(proxy_port, timeout_s=120, proc=proc):
                print(f"LiteLLM did not become ready (rc={proc.poll()}); its output:\n"
                      f"{_tail(log_path, 40)}", file=sys.stderr)
                return 1
            print(f"LiteLLM {LITELLM_VERSION} ready on 127.0.0.1:{proxy_port} "
                  f"after {time.monotonic() - t1:.1f}s (pid {proc.pid})")
            url = f"http://127.0.0.1:{proxy_port}"

            def show_httpx(title: str) -> tuple[list[str], float]:
                print(f"\n--- {title} (raw SSE lines, t = seconds since the request) ---")
                lines = _stream_httpx(url, "mock")
                for t, line in lines:
                    print(f"{t:7.3f}  {line}")
                data = [ln for _, ln in lines if ln.startswith("data: ")]
                content_times = [t for t, ln in lines if ln.startswith("data: {")
                                 and '"content":"' in ln.replace(" ", "")]
                spread = content_times[-1] - content_times[0] if len(content_times) > 1 else 0.0
                ttft = content_times[0] if content_times else float("nan")
                print(f"{len(data)} data lines, last={data[-1] if data else None!r}; "
                      f"TTFT {ttft:.3f}s; content spread over {spread:.3f}s "
                      f"(the upstream spaces its {n_chunks} chunks {delay_s}s apart)")
                return data, spread

            # The first request after start-up pays LiteLLM's lazy imports (~0.5-1 s), which can
            # bunch its first chunks together: judge incrementality on a warm request.
            show_httpx("httpx stream, first request after start-up")

            print("\n--- openai SDK stream (stream_options.include_usage) ---")
            chunks = _stream_openai_sdk(url, "mock")
            for t, c in chunks:
                choice = c.choices[0] if c.choices else None
                print(f"{t:7.3f}  id={c.id} model={c.model} "
                      f"delta={choice.delta.model_dump(exclude_none=True) if choice else None} "
                      f"finish={choice.finish_reason if choice else None} "
                      f"usage={c.usage.model_dump(exclude_none=True) if c.usage else None}")
            text = "".join((c.choices[0].delta.content or "") for _, c in chunks if c.choices)
            print(f"{len(chunks)} chunks, text={text!r}")

            data, spread = show_httpx("httpx stream, warm")
            incremental = spread >= 0.8 * (n_chunks - 1) * delay_s

            print("\n--- what the upstream received ---")
            for req in mock.requests:
                print(json.dumps(req))
            ok = (bool(data) and data[-1] == "data: [DONE]" and incremental
                  and text.split() == [f"word{i}" for i in range(n_chunks)])
            print(f"\nstreaming {'incremental' if incremental else 'BUFFERED'}; "
                  f"end-to-end {'OK' if ok else 'FAILED'}")
            return 0 if ok else 1
        finally:
            stop(proc)


if __name__ == "__main__":
    sys.exit(main())
