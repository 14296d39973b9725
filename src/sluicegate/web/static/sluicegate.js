// sluicegate.js: a small browser (and Node >= 18) client for the sluicegate gateway.
// One ES module, no dependencies, served by the gateway at /static/sluicegate.js.
//
//   import { Sluicegate } from "http://127.0.0.1:8400/static/sluicegate.js";
//   const client = new Sluicegate({ baseURL: "http://127.0.0.1:8400", apiKey: "sk-..." });
//   const stream = client.chat.stream({ model: "fast", messages: [...] }, { signal });
//   for await (const chunk of stream) out.textContent += chunk.choices[0]?.delta?.content ?? "";
//   stream.stats  // { ttftMs, tokensPerS, tokens, provider, model, attempts, resumes, ... }
//
// - SSEParser: the event-stream parser of HTML §9.2.6, fed raw bytes as they arrive: events
//   split across reads, CRLF / LF / CR line ends (a CR at the end of one read and the LF at the
//   start of the next are one line end), comments, a leading BOM, multi-byte UTF-8 split across
//   reads, id (kept across events, ignored when it holds NUL), retry, event.
// - Errors are SluicegateError: `status`, `code`, `partialText` (the text received before it).
//   Cancelling through an AbortSignal throws one with code "aborted" (name "AbortError").
// - Resumable streams (docs/wire.md §8): with `resumable: true` the request asks for
//   stream_options.resumable; if the connection drops, the stream is resumed with
//   GET /v1/chat/completions/{id}/stream and Last-Event-ID, each event delivered once.

const DECODER_OPTIONS = { fatal: false };

/** Spec-exact text/event-stream parser. `onEvent({type, data, lastEventId, retry})`. */
export class SSEParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.decoder = new TextDecoder("utf-8", DECODER_OPTIONS); // strips one leading BOM
    this.buffer = "";
    this.skipLF = false; // the previous piece ended with CR: a LF starting this one is its pair
    this.data = "";
    this.hasData = false;
    this.type = "";
    this.lastEventId = "";
    this.retry = null;
  }

  /** Feed bytes (Uint8Array) or already decoded text. */
  feed(chunk) {
    const text = typeof chunk === "string" ? chunk : this.decoder.decode(chunk, { stream: true });
    this._text(text);
  }

  /** The stream ended: flush the decoder. An unterminated last event is dropped (§9.2.6). */
  end() {
    this._text(this.decoder.decode());
    this.buffer = "";
    this.data = "";
    this.hasData = false;
    this.type = "";
  }

  _text(text) {
    if (!text) return;
    let start = 0;
    if (this.skipLF) {
      this.skipLF = false;
      if (text.charCodeAt(0) === 10) start = 1;
    }
    let buffer = this.buffer + text.slice(start);
    let pos = 0;
    for (;;) {
      let cr = buffer.indexOf("\r", pos);
      let lf = buffer.indexOf("\n", pos);
      if (cr === -1 && lf === -1) break;
      let end, next;
      if (cr !== -1 && (lf === -1 || cr < lf)) {
        end = cr;
        if (cr + 1 < buffer.length) {
          next = buffer.charCodeAt(cr + 1) === 10 ? cr + 2 : cr + 1;
        } else {
          next = cr + 1;
          this.skipLF = true; // maybe the first half of a CRLF split across reads
        }
      } else {
        end = lf;
        next = lf + 1;
      }
      this._line(buffer.slice(pos, end));
      pos = next;
    }
    this.buffer = buffer.slice(pos);
  }

  _line(line) {
    if (line === "") return this._dispatch();
    if (line.charCodeAt(0) === 58) return; // ":" comment
    const colon = line.indexOf(":");
    let field = line, value = "";
    if (colon !== -1) {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value.charCodeAt(0) === 32) value = value.slice(1);
    }
    switch (field) {
      case "data":
        this.data += value + "\n";
        this.hasData = true;
        break;
      case "event":
        this.type = value;
        break;
      case "id":
        if (!value.includes("\0")) this.lastEventId = value;
        break;
      case "retry":
        if (/^[0-9]+$/.test(value)) this.retry = Number(value);
        break;
      default: // unknown fields are ignored
    }
  }

  _dispatch() {
    if (!this.hasData) {
      this.type = "";
      return;
    }
    const event = {
      type: this.type || "message",
      data: this.data.slice(0, -1),
      lastEventId: this.lastEventId,
      retry: this.retry,
    };
    this.data = "";
    this.hasData = false;
    this.type = "";
    this.onEvent(event);
  }
}

/** Parse a byte stream (ReadableStream or async iterable of Uint8Array) into SSE events. */
export async function* readEvents(body, parser = null) {
  const queue = [];
  const p = parser ?? new SSEParser(null);
  p.onEvent = (event) => queue.push(event);
  const reader = body.getReader ? body.getReader() : null;
  try {
    if (reader) {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        p.feed(value);
        while (queue.length) yield queue.shift();
      }
    } else {
      for await (const value of body) {
        p.feed(value);
        while (queue.length) yield queue.shift();
      }
    }
    p.end();
    while (queue.length) yield queue.shift();
  } finally {
    if (reader) reader.cancel().catch(() => {});
  }
}

export class SluicegateError extends Error {
  constructor(message, { status = null, code = null, type = null, partialText = "", cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = code === "aborted" ? "AbortError" : "SluicegateError";
    this.status = status;
    this.code = code;
    this.type = type;
    this.partialText = partialText;
  }
}

const sleep = (ms, signal) => new Promise((resolve, reject) => {
  if (signal?.aborted) return reject(signal.reason);
  const timer = setTimeout(resolve, ms);
  signal?.addEventListener("abort", () => { clearTimeout(timer); reject(signal.reason); },
    { once: true });
});

async function errorFrom(response, partialText) {
  let body = null;
  try { body = await response.json(); } catch { /* not JSON */ }
  const err = body?.error ?? {};
  return new SluicegateError(err.message || `HTTP ${response.status}`, {
    status: response.status, code: err.code ?? null, type: err.type ?? null, partialText });
}

/**
 * One streaming chat completion: an async iterable of the OpenAI chunks. While and after
 * iterating: `text`, `stats`, `streamId`, `response`; `abort()` cancels.
 */
export class ChatStream {
  constructor(client, params, { signal, resumable, maxResumes = 8 } = {}) {
    this.client = client;
    this.controller = new AbortController();
    if (signal) {
      if (signal.aborted) this.controller.abort(signal.reason);
      else signal.addEventListener("abort", () => this.controller.abort(signal.reason),
        { once: true });
    }
    const options = { ...(params.stream_options ?? {}) };
    if (options.include_usage === undefined) options.include_usage = true;
    if (resumable ?? params.resumable) options.resumable = true;
    const { resumable: _ignored, ...rest } = params;
    this.body = { ...rest, stream: true, stream_options: options };
    this.maxResumes = maxResumes;
    this.text = "";
    this.streamId = null;
    this.lastEventId = null;
    this.response = null;
    this.done = false;
    this.stats = {
      model: params.model, provider: null, upstreamModel: null, attempts: null,
      startedAt: null, ttftMs: null, durationMs: null, tokensPerS: null, tokens: 0,
      chunks: 0, usage: null, resumes: 0, estimated: true,
    };
  }

  abort(reason) { this.controller.abort(reason); }

  get signal() { return this.controller.signal; }

  async *[Symbol.asyncIterator]() {
    const now = () => (globalThis.performance ?? Date).now();
    const stats = this.stats;
    stats.startedAt = now();
    let firstAt = null;
    let response = await this._fetch(() => this.client._fetch("/v1/chat/completions", {
      method: "POST", body: JSON.stringify(this.body), signal: this.signal,
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
    }));
    this.response = response;
    const h = response.headers;
    stats.provider = h.get("X-Sluicegate-Provider");
    stats.upstreamModel = h.get("X-Sluicegate-Model");
    stats.attempts = h.get("X-Sluicegate-Attempts") && Number(h.get("X-Sluicegate-Attempts"));
    this.streamId = h.get("X-Sluicegate-Stream-Id");
    let parser = new SSEParser(null);
    let failures = 0;
    for (;;) {
      try {
        for await (const event of readEvents(response.body, parser)) {
          if (event.lastEventId) this.lastEventId = event.lastEventId;
          failures = 0;
          if (event.data === "[DONE]") {
            this.done = true;
            break;
          }
          let chunk;
          try { chunk = JSON.parse(event.data); } catch {
            throw new SluicegateError("The gateway sent an event that is not JSON.", {
              code: "malformed_event", partialText: this.text });
          }
          if (chunk.error) {
            throw new SluicegateError(chunk.error.message || "The stream failed.", {
              status: chunk.error.status ?? null, code: chunk.error.code ?? null,
              type: chunk.error.type ?? null, partialText: this.text });
          }
          const piece = chunk.choices?.[0]?.delta?.content ?? chunk.choices?.[0]?.text ?? "";
          if (piece) {
            if (firstAt === null) {
              firstAt = now();
              stats.ttftMs = firstAt - stats.startedAt;
            }
            this.text += piece;
            stats.chunks += 1;
          }
          if (chunk.usage) {
            stats.usage = chunk.usage;
            stats.estimated = Boolean(chunk.usage.estimated);
          }
          this._rate(firstAt, now());
          yield chunk;
        }
        if (this.done) break;
        throw new TypeError("The stream ended before data: [DONE].");
      } catch (error) {
        if (error instanceof SluicegateError) throw error;
        if (this.signal.aborted) throw this._aborted(error);
        // A network failure mid-stream: resume a resumable stream, else report it.
        if (!this.streamId || failures >= this.maxResumes) {
          throw new SluicegateError(`The connection failed: ${error?.message ?? error}`, {
            code: "connection_error", partialText: this.text, cause: error });
        }
        failures += 1;
        response = await this._resume(failures);
        parser = new SSEParser(null); // the cut event's first half is dropped; ids carry on
        stats.resumes += 1;
      }
    }
    this._rate(firstAt, now());
    stats.durationMs = now() - stats.startedAt;
  }

  _rate(firstAt, at) {
    const stats = this.stats;
    stats.tokens = stats.usage?.completion_tokens ?? stats.chunks;
    if (firstAt !== null && at > firstAt && stats.tokens > 1) {
      stats.tokensPerS = (stats.tokens - 1) / ((at - firstAt) / 1000);
    }
  }

  _aborted(cause) {
    if (this.streamId && !this.done) {
      // Resumable streams go on without a reader: stop the upstream work on the gateway.
      this.client._fetch(`/v1/chat/completions/${encodeURIComponent(this.streamId)}`,
        { method: "DELETE" }).catch(() => {});
    }
    return new SluicegateError("The stream was cancelled.", {
      code: "aborted", partialText: this.text, cause });
  }

  async _fetch(call) {
    let response;
    try {
      response = await call();
    } catch (error) {
      if (this.signal.aborted) throw this._aborted(error);
      throw new SluicegateError(`The request failed: ${error?.message ?? error}`, {
        code: "connection_error", partialText: this.text, cause: error });
    }
    if (!response.ok) throw await errorFrom(response, this.text);
    return response;
  }

  async _resume(failures) {
    const path = `/v1/chat/completions/${encodeURIComponent(this.streamId)}/stream`;
    for (let attempt = 0; ; attempt++) {
      const delay = Math.min(2000, 100 * 2 ** (failures + attempt - 1)) * (0.75 + Math.random() / 2);
      try {
        await sleep(delay, this.signal);
      } catch (error) {
        throw this._aborted(error);
      }
      const headers = { Accept: "text/event-stream" };
      if (this.lastEventId) headers["Last-Event-ID"] = this.lastEventId;
      try {
        const response = await this.client._fetch(path, { headers, signal: this.signal });
        if (response.ok) return response;
        const error = await errorFrom(response, this.text);
        if (response.status < 500 && response.status !== 429) throw error;
        if (attempt + failures >= this.maxResumes) throw error;
      } catch (error) {
        if (error instanceof SluicegateError) throw error;
        if (this.signal.aborted) throw this._aborted(error);
        if (attempt + failures >= this.maxResumes) {
          throw new SluicegateError(`Resuming the stream failed: ${error?.message ?? error}`, {
            code: "connection_error", partialText: this.text, cause: error });
        }
      }
    }
  }
}

/** The gateway's client. `fetch` may be replaced (tests, proxies). */
export class Sluicegate {
  constructor({ baseURL = "", apiKey = null, fetch: fetchImpl = null, headers = {} } = {}) {
    this.baseURL = baseURL.replace(/\/+$/, "");
    this.apiKey = apiKey;
    this.fetchImpl = fetchImpl ?? ((...args) => globalThis.fetch(...args));
    this.headers = headers;
    this.chat = {
      /** An async iterable of chunks: `for await (const chunk of client.chat.stream(...))`. */
      stream: (params, options = {}) => new ChatStream(this, params, options),
      /** The whole answer as one string, with the stream's stats: `{text, stats}`. */
      complete: async (params, options = {}) => {
        const stream = new ChatStream(this, params, options);
        for await (const _ of stream) { /* accumulate */ }
        return { text: stream.text, stats: stream.stats, stream };
      },
    };
  }

  _fetch(path, init = {}) {
    const headers = { ...this.headers, ...(init.headers ?? {}) };
    if (this.apiKey) headers.Authorization = `Bearer ${this.apiKey}`;
    return this.fetchImpl(this.baseURL + path, { ...init, headers });
  }

  async _json(path) {
    let response;
    try {
      response = await this._fetch(path);
    } catch (error) {
      throw new SluicegateError(`The request failed: ${error?.message ?? error}`, {
        code: "connection_error", cause: error });
    }
    if (!response.ok) throw await errorFrom(response, "");
    return response.json();
  }

  /** The model ids `/v1/models` lists. */
  async models() {
    return (await this._json("/v1/models")).data.map((m) => m.id);
  }

  /** `GET /v1/stats`: in-flight streams and the last minutes' TTFT and tokens/s. */
  stats() { return this._json("/v1/stats"); }
}

export default Sluicegate;
