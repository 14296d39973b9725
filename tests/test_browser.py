"""The playground and the JavaScript client in a real headless Chromium (Playwright driving
Debian's ``chromium``; no browser is downloaded), against a gateway in front of the fake upstream.

Skipped, with the reason, only when no Chromium executable can be found (``.ci/run`` installs
Debian's ``chromium`` when it runs as root). Screenshots of every view go to ``docs/img/`` with
``SLUICEGATE_SCREENSHOTS=1`` (a scratch folder otherwise).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from sluicegate.config import DeploymentConfig, GatewayConfig

from .conftest import MASTER_KEY, MOCK_KEY, MOCK_KEY_ENV
from .fakes import FakeOpenAIUpstream, Script, ServerThread, start_gateway
from .fakes_story import CuttingProxy

ROOT = Path(__file__).resolve().parent.parent
# The README's screenshots are rewritten only when asked (SLUICEGATE_SCREENSHOTS=1), so a test
# run leaves the work tree clean; otherwise they go to a scratch folder.
SHOTS = (ROOT / "docs" / "img" if os.environ.get("SLUICEGATE_SCREENSHOTS") == "1"
         else Path(tempfile.gettempdir()) / "sluicegate-screenshots")
SHOTS.mkdir(parents=True, exist_ok=True)
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TEXTS = ["The ", "quick ", "brown ", "fox ", "jumps ", "over ", "the ", "lazy ", "dog", "."]


def find_chromium() -> str | None:
    if path := os.environ.get("SLUICEGATE_CHROMIUM"):
        return path
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium executable found (install Debian's chromium: "
    "apt-get install chromium, or set SLUICEGATE_CHROMIUM); the browser tests need one")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="sluicegate-chromium-") as profile, \
            sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=ARGS, headless=True, viewport=DESKTOP)
        context.close()  # a fresh profile proved usable; each test gets its own context
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport=DESKTOP)
    ctx.set_default_timeout(20_000)
    yield ctx
    ctx.close()


@pytest.fixture(scope="module")
def web_gateway(upstream: FakeOpenAIUpstream) -> Iterator[ServerThread]:
    """A gateway with an API key, two models on the fake upstream and no embedded model."""
    mp = pytest.MonkeyPatch()
    mp.setenv(MOCK_KEY_ENV, MOCK_KEY)
    config = GatewayConfig(embedded_model=False, models=[
        DeploymentConfig(name=name, provider="openai", base_url=upstream.base_url,
                         model=f"upstream-{name}", api_key_env=MOCK_KEY_ENV)
        for name in ("alpha", "beta", "gamma")])
    config.local.preload = False
    config.routing.max_retries = 0
    config.server.api_key = MASTER_KEY
    server, _ = start_gateway(config)
    try:
        yield server
    finally:
        server.stop()
        mp.undo()


def wait_for(condition: Any, timeout_s: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def open_playground(context: Any, gw: ServerThread) -> Any:
    page = context.new_page()
    page.goto(gw.url + "/playground")
    page.locator("#keybar").wait_for(state="visible")  # the key is asked for: 401 on /v1/models
    page.fill("#api-key", MASTER_KEY)
    page.click("#keybar button[type=submit]")
    page.wait_for_function("document.querySelectorAll('#model option').length === 3")
    assert MASTER_KEY not in page.url
    assert page.evaluate("sessionStorage.getItem('sluicegate.apiKey')") == MASTER_KEY
    return page


def assert_fits_phone(page: Any) -> None:
    """At a phone's width (390 px), nothing makes the page scroll sideways."""
    size = page.viewport_size
    page.set_viewport_size(PHONE)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow} px wider than a phone"
    page.set_viewport_size(size)


def send(page: Any, prompt: str, model: str = "alpha") -> None:
    page.select_option("#model", model)
    page.fill("#prompt", prompt)
    page.click("#send")


def last_answer(page: Any) -> Any:
    return page.locator(".msg.assistant").last


def test_cross_origin_page_streams_growing_text(context: Any, web_gateway: ServerThread,
                                                fake: FakeOpenAIUpstream) -> None:
    """A page on another origin imports the module from the gateway and streams; the DOM's
    growth timestamps span the upstream's pacing."""
    fake.script = Script(texts=TEXTS, gap_s=0.15)
    html = f"""<!doctype html><meta charset="utf-8"><pre id="out"></pre><p id="stats"></p>
<script type="module">
import {{ Sluicegate }} from "{web_gateway.url}/static/sluicegate.js";
window.growth = [];
const out = document.getElementById("out");
new MutationObserver(() => growth.push([performance.now(), out.textContent.length]))
  .observe(out, {{ childList: true, characterData: true, subtree: true }});
const client = new Sluicegate({{ baseURL: "{web_gateway.url}", apiKey: "{MASTER_KEY}" }});
const stream = client.chat.stream({{ model: "alpha",
  messages: [{{ role: "user", content: "hi" }}] }});
for await (const chunk of stream) out.append(chunk.choices[0]?.delta?.content ?? "");
document.getElementById("stats").textContent = JSON.stringify(stream.stats);
</script>"""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    def app() -> web.Application:
        application = web.Application()
        application.router.add_get("/", page)
        return application

    other = ServerThread.serve(app)
    try:
        assert other.port != web_gateway.port
        tab = context.new_page()
        tab.goto(other.url + "/")
        tab.locator("#stats").filter(has_text="ttftMs").wait_for()
        assert tab.locator("#out").text_content() == "".join(TEXTS)
        growth = tab.evaluate("window.growth")
        stats = tab.evaluate("JSON.parse(document.getElementById('stats').textContent)")
    finally:
        other.stop()
    lengths = [n for _, n in growth]
    assert lengths == sorted(lengths) and len(set(lengths)) >= len(TEXTS) - 1
    span_s = (growth[-1][0] - growth[0][0]) / 1000
    assert span_s >= 0.15 * (len(TEXTS) - 1) * 0.8, (span_s, growth)
    assert stats["provider"] == "alpha" and stats["attempts"] == 1
    assert stats["tokensPerS"] > 0 and stats["ttftMs"] > 0


def test_playground_chat_streams_with_stats(context: Any, web_gateway: ServerThread,
                                            fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(texts=TEXTS, gap_s=0.15)
    page = open_playground(context, web_gateway)
    page.fill("#system", "You answer in one sentence.")
    send(page, "Say something about a fox.")
    answer = last_answer(page)
    page.wait_for_function(
        "document.querySelector('.msg.assistant .text').textContent.length > 0")
    assert answer.locator(".text").text_content() != "".join(TEXTS)  # still growing
    answer.locator(".stats[data-done=ok]").wait_for()
    assert answer.locator(".text").text_content() == "".join(TEXTS)
    stats = answer.locator(".stats").text_content() or ""
    for part in ("TTFT", "tok/s", "10 tokens", "alpha/upstream-alpha", "1 attempt"):
        assert part in stats, stats
    body = fake.received[-1].body
    assert body["messages"][0] == {"role": "system", "content": "You answer in one sentence."}
    assert fake.received[-1].headers.get("Authorization") == f"Bearer {MOCK_KEY}"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "playground-chat.png"))
    assert_fits_phone(page)
    page.set_viewport_size(PHONE)
    page.screenshot(path=str(SHOTS / "playground-phone.png"))


@pytest.mark.parametrize("resumable", [True, False], ids=["resumable", "plain"])
def test_stop_cancels_upstream(context: Any, web_gateway: ServerThread,
                               fake: FakeOpenAIUpstream, resumable: bool) -> None:
    fake.script = Script(texts=[f"w{i} " for i in range(60)], gap_s=0.1)
    page = open_playground(context, web_gateway)
    page.set_checked("#resumable", resumable)
    send(page, "Go on for a while.")
    page.wait_for_function(
        "document.querySelector('.msg.assistant .text').textContent.length > 6")
    page.click("#stop")
    wait_for(lambda: fake.closed_early, 10, "the fake upstream to see the close")
    last_answer(page).locator(".stats[data-done=error]").wait_for()
    assert "stopped" in (last_answer(page).locator(".stats").text_content() or "")
    assert not page.locator("#send").is_disabled()
    assert fake.sent < 60


def test_compare_streams_two_models_at_once(context: Any, web_gateway: ServerThread,
                                            fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(texts=TEXTS, gap_s=0.12)
    page = open_playground(context, web_gateway)
    page.click("[role=tab][data-view=compare]")
    page.check("#compare-models input[value=alpha]")
    page.check("#compare-models input[value=beta]")
    page.fill("#compare-prompt", "Describe a fox.")
    page.click("#compare-run")
    # Both columns hold part of their answer at the same moment.
    page.wait_for_function("""() => {
      const texts = [...document.querySelectorAll('#columns .column .text')]
        .map(n => n.textContent.length);
      return texts.length === 2 && texts.every(n => n > 0 && n < 40);
    }""")
    page.wait_for_function(
        "document.querySelectorAll('#columns .stats[data-done=ok]').length === 2")
    columns = page.locator("#columns .column")
    assert columns.count() == 2
    for i, name in enumerate(("alpha", "beta")):
        assert columns.nth(i).locator("h3").text_content() == name
        assert columns.nth(i).locator(".text").text_content() == "".join(TEXTS)
        assert f"{name}/upstream-{name}" in (columns.nth(i).locator(".stats").text_content()
                                             or "")
    assert sorted(r.body["model"] for r in fake.received[-2:]) == ["upstream-alpha",
                                                                  "upstream-beta"]
    page.screenshot(path=str(SHOTS / "playground-compare.png"))
    assert_fits_phone(page)


def test_live_panel_shows_an_in_flight_stream(context: Any, web_gateway: ServerThread,
                                              fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(texts=TEXTS, gap_s=0.05)
    page = open_playground(context, web_gateway)
    send(page, "A short one first, for the figures.")
    last_answer(page).locator(".stats[data-done=ok]").wait_for()
    fake.script = Script(texts=[f"w{i} " for i in range(80)], gap_s=0.1)
    send(page, "Now a long one.", model="beta")
    page.wait_for_function(
        "document.querySelectorAll('.msg.assistant')[1].querySelector('.text')"
        ".textContent.length > 0")
    page.click("[role=tab][data-view=live]")
    row = page.locator("#live-table tbody tr").filter(has_text="beta")
    row.wait_for()
    assert row.locator("td").nth(2).text_content() == "beta"
    assert page.locator("#live-count").text_content() == "1"
    page.wait_for_function("document.querySelector('#chart-ttft path').getAttribute('d')"
                           ".startsWith('M') && !document.querySelector('#chart-ttft text')"
                           ".textContent.includes('no data')")
    page.screenshot(path=str(SHOTS / "playground-live.png"))
    assert_fits_phone(page)
    page.click("[role=tab][data-view=chat]")
    page.click("#stop")
    wait_for(lambda: fake.closed_early, 10, "the stopped stream's close")


def test_resumable_stream_survives_a_network_drop(context: Any, web_gateway: ServerThread,
                                                  fake: FakeOpenAIUpstream) -> None:
    """The page reaches the gateway through a loopback TCP proxy. The drop: the browser goes
    offline (Playwright) and the proxy cuts every open connection (Chromium's offline mode
    refuses new requests but leaves a running response alone); a second later the browser is
    back online, and the client resumes with Last-Event-ID."""
    texts = [f"t{i:02d} " for i in range(30)]
    fake.script = Script(texts=texts, gap_s=0.1)
    proxy = CuttingProxy([web_gateway.port])

    class Via:
        url = proxy.url

    try:
        resumed_through_drop(context, fake, proxy, Via, texts)  # type: ignore[arg-type]
    finally:
        proxy.stop()


def resumed_through_drop(context: Any, fake: FakeOpenAIUpstream, proxy: CuttingProxy,
                         via: ServerThread, texts: list[str]) -> None:
    page = open_playground(context, via)
    assert page.is_checked("#resumable")
    send(page, "Keep going through a drop.")
    page.wait_for_function(
        "document.querySelector('.msg.assistant .text').textContent.length >= 12")
    context.set_offline(True)
    proxy.loop.call_soon_threadsafe(lambda: [task.cancel() for task in list(proxy._tasks)])
    time.sleep(1.0)
    during = last_answer(page).locator(".text").text_content() or ""
    context.set_offline(False)
    last_answer(page).locator(".stats[data-done]").wait_for(timeout=30_000)
    stats = last_answer(page).locator(".stats").text_content() or ""
    assert last_answer(page).locator(".text").text_content() == "".join(texts), stats
    assert "resumed" in stats, stats
    assert len(during) < len("".join(texts))  # the drop really was mid-stream
    assert len(fake.received) == 1  # one upstream request: the gateway kept producing
    resumes = [line for _, line in proxy.connections if line.startswith(b"GET /v1/chat/")]
    assert resumes and all(line.endswith(b"/stream HTTP/1.1") for line in resumes), resumes


def test_readme_browser_example_runs(context: Any, web_gateway: ServerThread,
                                     fake: FakeOpenAIUpstream) -> None:
    """The README's ```js example, on a page of another origin, against the test gateway."""
    import re

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    example = next(block for block in re.findall(r"```js\n(.*?)```", readme, re.S)
                   if "/static/sluicegate.js" in block)
    example = (example.replace("http://127.0.0.1:8400", web_gateway.url)
               .replace("sk-my-gateway-key", MASTER_KEY).replace('"default"', '"alpha"'))
    fake.script = Script(texts=TEXTS, gap_s=0.02)
    html = f'<!doctype html><meta charset="utf-8"><pre id="out"></pre>' \
           f'<script type="module">{example}</script>'

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    def app() -> web.Application:
        application = web.Application()
        application.router.add_get("/", page)
        return application

    other = ServerThread.serve(app)
    try:
        tab = context.new_page()
        with tab.expect_console_message(lambda m: "tokens/s" in m.text) as message:
            tab.goto(other.url + "/")
        assert tab.locator("#out").text_content() == "".join(TEXTS)
        assert "via alpha" in message.value.text
    finally:
        other.stop()
