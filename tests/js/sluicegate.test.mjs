// The JavaScript client (src/sluicegate/web/static/sluicegate.js) in Node's test runner:
//   node --test tests/js/
// tests/test_js_client.py runs this from pytest.
import { test } from "node:test";
import assert from "node:assert/strict";

import {
  ChatStream, SSEParser, Sluicegate, SluicegateError, readEvents,
} from "../../src/sluicegate/web/static/sluicegate.js";

const enc = new TextEncoder();

function parseAll(pieces) {
  const events = [];
  const parser = new SSEParser((e) => events.push(e));
  for (const piece of pieces) parser.feed(piece);
  parser.end();
  return events.map(({ type, data, lastEventId }) => ({ type, data, lastEventId }));
}

// A stream that exercises the whole grammar: BOM, LF / CRLF / CR line ends, comments, id,
// event, retry, multi-line data, a field with no colon, no space after the colon, multi-byte
// UTF-8 (2, 3 and 4 bytes), an id with NUL (ignored), an event with no data (not dispatched)
// and an unterminated event at the end (dropped).
const STREAM = "\uFEFF: hello comment\n"
  + "id: s:1\ndata: {\"t\":\"é\"}\n\n"
  + "data: first\r\ndata: second\r\n\r\n"
  + "event: custom\rdata:no-space\r\r"
  + ": keep-alive\r\n\r\n"
  + "id: s:2\r\ndata: 漢字 and 🎉\r\n\r\n"
  + "retry: 1500\nid: bad\u0000id\ndata\n\n"
  + "event: lonely\n\n"
  + "id: s:3\ndata:  two spaces\n\n"
  + "data: [DONE]\n\n"
  + "data: never dispatched";

const EXPECTED = [
  { type: "message", data: "{\"t\":\"é\"}", lastEventId: "s:1" },
  { type: "message", data: "first\nsecond", lastEventId: "s:1" },
  { type: "custom", data: "no-space", lastEventId: "s:1" },
  { type: "message", data: "漢字 and 🎉", lastEventId: "s:2" },
  { type: "message", data: "", lastEventId: "s:2" },
  { type: "message", data: " two spaces", lastEventId: "s:3" },
  { type: "message", data: "[DONE]", lastEventId: "s:3" },
];

test("whole stream in one read", () => {
  assert.deepEqual(parseAll([enc.encode(STREAM)]), EXPECTED);
});

test("split at every byte offset", () => {
  const bytes = enc.encode(STREAM);
  for (let i = 0; i <= bytes.length; i++) {
    assert.deepEqual(parseAll([bytes.slice(0, i), bytes.slice(i)]), EXPECTED, `split at ${i}`);
  }
});

test("split at every pair of byte offsets", () => {
  const bytes = enc.encode(STREAM);
  for (let i = 0; i <= bytes.length; i++) {
    for (let j = i; j <= bytes.length; j += 3) {
      const pieces = [bytes.slice(0, i), bytes.slice(i, j), bytes.slice(j)];
      assert.deepEqual(parseAll(pieces), EXPECTED, `split at ${i} and ${j}`);
    }
  }
});

test("one byte per read", () => {
  const bytes = enc.encode(STREAM);
  const pieces = [];
  for (let i = 0; i < bytes.length; i++) pieces.push(bytes.slice(i, i + 1));
  assert.deepEqual(parseAll(pieces), EXPECTED);
});

test("CR at the end of a read, LF at the start of the next: one line end", () => {
  const events = parseAll([enc.encode("data: a\r"), enc.encode("\ndata: b\r"), enc.encode("\n\r\n")]);
  assert.deepEqual(events.map((e) => e.data), ["a\nb"]);
});

test("only the first BOM is stripped; invalid UTF-8 becomes U+FFFD", () => {
  const events = parseAll([new Uint8Array([0xef, 0xbb, 0xbf]), enc.encode("data: x\n\n"),
    new Uint8Array([0x64, 0x61, 0x74, 0x61, 0x3a, 0x20, 0xff, 0x0a, 0x0a])]);
  assert.deepEqual(events.map((e) => e.data), ["x", "\uFFFD"]);
});

// -- the client, over a scripted fetch ------------------------------------------------------

function chunk(content, extra = {}) {
  return { id: "chatcmpl-1", object: "chat.completion.chunk", model: "m",
    choices: [{ index: 0, delta: { content }, finish_reason: null }], ...extra };
}

function sse(events, ids = null) {
  return events.map((e, k) => (ids ? `id: ${ids}:${k + 1}\n` : "")
    + `data: ${typeof e === "string" ? e : JSON.stringify(e)}\n\n`).join("");
}

/** A Response whose body yields `pieces` (strings or bytes), then fails if `fail` is set. */
function streamed(pieces, { status = 200, headers = {}, fail = null, gapMs = 0 } = {}) {
  let i = 0;
  const body = new ReadableStream({
    async pull(controller) {
      if (gapMs) await new Promise((r) => setTimeout(r, gapMs));
      if (i < pieces.length) {
        const p = pieces[i++];
        controller.enqueue(typeof p === "string" ? enc.encode(p) : p);
      } else if (fail) {
        controller.error(fail);
      } else {
        controller.close();
      }
    },
  });
  return new Response(body, {
    status, headers: { "Content-Type": "text/event-stream", ...headers } });
}

function scriptedFetch(answers) {
  const calls = [];
  const fetch = async (url, init = {}) => {
    calls.push({ url, init });
    const next = answers.shift();
    if (next instanceof Error) throw next;
    return typeof next === "function" ? next(url, init) : next;
  };
  return { fetch, calls };
}

const PARAMS = { model: "m", messages: [{ role: "user", content: "hi" }] };

test("chat.stream yields the chunks and sums the text, events split anywhere", async () => {
  const text = sse([chunk("Hel"), chunk("lo 🎉"), chunk("!"),
    { ...chunk(""), choices: [], usage: { prompt_tokens: 3, completion_tokens: 3 } }, "[DONE]"]);
  const bytes = enc.encode(text);
  const pieces = [];
  for (let i = 0; i < bytes.length; i += 7) pieces.push(bytes.slice(i, i + 7));
  const { fetch, calls } = scriptedFetch([streamed(pieces, { headers: {
    "X-Sluicegate-Provider": "openai", "X-Sluicegate-Attempts": "2",
    "X-Sluicegate-Model": "gpt" } })]);
  const client = new Sluicegate({ baseURL: "http://gw/", apiKey: "sk-test", fetch });
  const stream = client.chat.stream(PARAMS);
  const seen = [];
  for await (const c of stream) seen.push(c.choices[0]?.delta?.content ?? "");
  assert.equal(seen.join(""), "Hello 🎉!");
  assert.equal(stream.text, "Hello 🎉!");
  assert.equal(calls[0].url, "http://gw/v1/chat/completions");
  assert.equal(calls[0].init.headers.Authorization, "Bearer sk-test");
  const body = JSON.parse(calls[0].init.body);
  assert.equal(body.stream, true);
  assert.equal(body.stream_options.include_usage, true);
  assert.equal(body.stream_options.resumable, undefined);
  assert.equal(stream.stats.provider, "openai");
  assert.equal(stream.stats.attempts, 2);
  assert.equal(stream.stats.upstreamModel, "gpt");
  assert.equal(stream.stats.tokens, 3);
  assert.ok(stream.stats.ttftMs >= 0);
  assert.ok(stream.stats.durationMs >= stream.stats.ttftMs);
});

test("tokens/s from the time after the first token", async () => {
  const pieces = [chunk("a"), chunk("b"), chunk("c"), "[DONE]"].map((e) => sse([e]));
  const { fetch } = scriptedFetch([streamed(pieces, { gapMs: 40 })]);
  const stream = new Sluicegate({ fetch }).chat.stream(PARAMS);
  for await (const _ of stream) { /* drain */ }
  assert.equal(stream.stats.tokens, 3);
  assert.ok(stream.stats.tokensPerS > 5 && stream.stats.tokensPerS < 60, stream.stats.tokensPerS);
});

test("an error frame mid-stream throws with the partial text", async () => {
  const text = sse([chunk("partial "), chunk("answer"),
    { ...chunk(""), error: { message: "Provider disconnected", code: "upstream_error",
      type: "server_error" } }, "[DONE]"]);
  const { fetch } = scriptedFetch([streamed([text])]);
  const stream = new Sluicegate({ fetch }).chat.stream(PARAMS);
  await assert.rejects(async () => { for await (const _ of stream) { /* drain */ } }, (err) => {
    assert.ok(err instanceof SluicegateError);
    assert.equal(err.code, "upstream_error");
    assert.equal(err.message, "Provider disconnected");
    assert.equal(err.partialText, "partial answer");
    return true;
  });
});

test("an HTTP error before the stream throws with status and code", async () => {
  const { fetch } = scriptedFetch([new Response(JSON.stringify({ error: {
    message: "Incorrect API key provided.", type: "authentication_error",
    code: "invalid_api_key" } }), { status: 401 })]);
  await assert.rejects(async () => {
    for await (const _ of new Sluicegate({ fetch }).chat.stream(PARAMS)) { /* drain */ }
  }, (err) => err.status === 401 && err.code === "invalid_api_key" && err.partialText === "");
});

test("a dropped plain stream throws connection_error with the partial text", async () => {
  const { fetch } = scriptedFetch([streamed([sse([chunk("abc")])],
    { fail: new TypeError("terminated") })]);
  await assert.rejects(async () => {
    for await (const _ of new Sluicegate({ fetch }).chat.stream(PARAMS)) { /* drain */ }
  }, (err) => err.code === "connection_error" && err.partialText === "abc");
});

test("a stream that ends without [DONE] is an error", async () => {
  const { fetch } = scriptedFetch([streamed([sse([chunk("abc")])])]);
  await assert.rejects(async () => {
    for await (const _ of new Sluicegate({ fetch }).chat.stream(PARAMS)) { /* drain */ }
  }, (err) => err.code === "connection_error" && err.partialText === "abc");
});

test("AbortController cancels: AbortError with the partial text", async () => {
  const controller = new AbortController();
  const { fetch } = scriptedFetch([(url, init) => {
    let sent = false;
    const body = new ReadableStream({
      pull(c) {
        if (!sent) { sent = true; c.enqueue(enc.encode(sse([chunk("first")]))); return; }
        return new Promise((_, reject) => init.signal.addEventListener("abort",
          () => reject(new DOMException("aborted", "AbortError"))));
      },
    });
    return new Response(body, { headers: { "Content-Type": "text/event-stream" } });
  }]);
  const stream = new Sluicegate({ fetch }).chat.stream(PARAMS, { signal: controller.signal });
  await assert.rejects(async () => {
    for await (const _ of stream) controller.abort();
  }, (err) => err.name === "AbortError" && err.code === "aborted" && err.partialText === "first");
});

test("a resumable stream resumes with Last-Event-ID after a drop, each event once", async () => {
  const sid = "rs_abcdefghijklmnopqrstuvwx";
  const all = [chunk("one "), chunk("two "), chunk("three "), chunk("four"), "[DONE]"];
  const framed = all.map((e, k) => `id: ${sid}:${k + 1}\ndata: ${
    typeof e === "string" ? e : JSON.stringify(e)}\n\n`);
  // The first connection delivers 2 events and half of the third, then drops.
  const cut = framed[2].slice(0, 12);
  const { fetch, calls } = scriptedFetch([
    streamed([framed[0], framed[1] + cut], { headers: { "X-Sluicegate-Stream-Id": sid },
      fail: new TypeError("network error") }),
    new TypeError("Failed to fetch"), // still offline
    streamed(framed.slice(2)),
  ]);
  const client = new Sluicegate({ baseURL: "http://gw", apiKey: "sk-k", fetch });
  const stream = client.chat.stream(PARAMS, { resumable: true });
  const pieces = [];
  for await (const c of stream) pieces.push(c.choices[0].delta.content);
  assert.equal(stream.text, "one two three four");
  assert.deepEqual(pieces, ["one ", "two ", "three ", "four"]);
  assert.equal(JSON.parse(calls[0].init.body).stream_options.resumable, true);
  for (const call of calls.slice(1)) {
    assert.equal(call.url, `http://gw/v1/chat/completions/${sid}/stream`);
    assert.equal(call.init.headers["Last-Event-ID"], `${sid}:2`);
    assert.equal(call.init.headers.Authorization, "Bearer sk-k");
  }
  assert.equal(stream.stats.resumes, 1);
});

test("a resume refused by the gateway throws its error with the partial text", async () => {
  const sid = "rs_x";
  const { fetch } = scriptedFetch([
    streamed([`id: ${sid}:1\ndata: ${JSON.stringify(chunk("kept"))}\n\n`], {
      headers: { "X-Sluicegate-Stream-Id": sid }, fail: new TypeError("network error") }),
    new Response(JSON.stringify({ error: { message: "gone", code: "stream_not_found" } }),
      { status: 404 }),
  ]);
  await assert.rejects(async () => {
    for await (const _ of new Sluicegate({ fetch }).chat.stream(PARAMS, { resumable: true })) {
      /* drain */
    }
  }, (err) => err.code === "stream_not_found" && err.partialText === "kept");
});

test("readEvents reads a ReadableStream", async () => {
  const events = [];
  for await (const e of readEvents(streamed(["data: a\n", "\ndata: b\n\n"]).body)) {
    events.push(e.data);
  }
  assert.deepEqual(events, ["a", "b"]);
});

test("models() and stats() carry the key", async () => {
  const { fetch, calls } = scriptedFetch([
    new Response(JSON.stringify({ data: [{ id: "a" }, { id: "b" }] })),
    new Response(JSON.stringify({ in_flight: [] })),
  ]);
  const client = new Sluicegate({ apiKey: "k", fetch });
  assert.deepEqual(await client.models(), ["a", "b"]);
  assert.deepEqual(await client.stats(), { in_flight: [] });
  assert.equal(calls[1].url, "/v1/stats");
  assert.equal(calls[1].init.headers.Authorization, "Bearer k");
  assert.ok(ChatStream);
});
