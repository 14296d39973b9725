#!/usr/bin/env node
// Mock OpenAI-dialect streaming upstream for the sluicegate benchmarks (node built-ins only).
//
//   node bench/mock_upstream.js --port P [--chunks 64] [--gap-ms 20] [--ttft-ms 0]
//                               [--chunk-chars 4] [--host 127.0.0.1]
//
// Prints "ready <port>" on stdout once listening (--port 0 picks a free port).
//
// POST .../chat/completions, stream=true: 200 text/event-stream; headers go out at once, then
// after --ttft-ms a role chunk, immediately the first content chunk, further content chunks
// --gap-ms apart (deadline-based: chunk k is due at t_role + k*gap, so timer lateness does not
// accumulate), then the finish chunk, the usage chunk if stream_options.include_usage, and
// "data: [DONE]". One res.write per event. stream=false: one chat.completion after --ttft-ms.
// GET .../models lists the single model "mock". A client disconnect stops the stream's timer.
//
// Scheduling: streams whose next chunk falls due in the same millisecond share one timer
// ("bucket"); a bucket fires, writes to every stream in it and re-buckets them. At 200 streams
// x 50 chunks/s this measured the same CPU per chunk as a timer per stream (within noise,
// ~25-30 us/chunk on the 2-core VM, mostly syscalls); at 10,000 streams x 1 chunk/s it keeps
// at most one live Timeout per millisecond of the gap instead of one per stream.
'use strict';

const http = require('http');
const { performance } = require('perf_hooks');

function parseArgs(argv) {
  const opts = { port: 0, chunks: 64, gapMs: 20, ttftMs: 0, chunkChars: 4, host: '127.0.0.1' };
  const names = {
    '--port': 'port', '--chunks': 'chunks', '--gap-ms': 'gapMs', '--ttft-ms': 'ttftMs',
    '--chunk-chars': 'chunkChars', '--host': 'host',
  };
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let val;
    const eq = arg.indexOf('=');
    if (eq > 0) { val = arg.slice(eq + 1); arg = arg.slice(0, eq); }
    const key = names[arg];
    if (!key) { usage(`unknown argument ${arg}`); }
    if (val === undefined) { val = argv[++i]; }
    if (val === undefined) { usage(`missing value for ${arg}`); }
    if (key === 'host') { opts.host = val; continue; }
    const num = Number(val);
    if (!Number.isFinite(num) || num < 0) { usage(`bad value for ${arg}: ${val}`); }
    opts[key] = num;
  }
  opts.chunks = Math.floor(opts.chunks);
  opts.chunkChars = Math.max(1, Math.floor(opts.chunkChars));
  return opts;
}

function usage(msg) {
  process.stderr.write(`mock_upstream: ${msg}\nusage: node bench/mock_upstream.js --port P ` +
    '[--chunks 64] [--gap-ms 20] [--ttft-ms 0] [--chunk-chars 4] [--host 127.0.0.1]\n');
  process.exit(2);
}

const opts = parseArgs(process.argv.slice(2));

// Varying token texts of exactly chunkChars characters, pre-serialised as JSON strings; one
// token per BASE offset, so cycling through TOKENS reads BASE over and over without seams.
const BASE = 'tok lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor ' +
  'incididunt ut labore et dolore magna aliqua ';
const TOKENS = [];
for (let i = 0; i < BASE.length; i++) {
  let s = '';
  let off = (i * opts.chunkChars) % BASE.length;
  while (s.length < opts.chunkChars) {
    s += BASE.slice(off, off + opts.chunkChars - s.length);
    off = 0;
  }
  TOKENS.push(JSON.stringify(s));
}
const FULL_TEXT = (() => {
  const parts = [];
  for (let k = 0; k < opts.chunks; k++) { parts.push(JSON.parse(TOKENS[k % TOKENS.length])); }
  return parts.join('');
})();

const SSE_HEADERS = {
  'Content-Type': 'text/event-stream',
  'Cache-Control': 'no-cache',
};
const DONE = 'data: [DONE]\n\n';

// ---------------------------------------------------------------- bucketed scheduler
const buckets = new Map(); // due ms (integer, performance.now() clock) -> array of streams

function fireBucket(due) {
  const list = buckets.get(due);
  buckets.delete(due);
  for (let i = 0; i < list.length; i++) {
    const st = list[i];
    if (!st.closed) { step(st); }
  }
}

function schedule(st, dueMs) {
  const due = Math.ceil(dueMs);
  let list = buckets.get(due);
  if (list === undefined) {
    list = [];
    buckets.set(due, list);
    setTimeout(fireBucket, Math.max(0, due - performance.now()), due);
  }
  list.push(st);
}

// ---------------------------------------------------------------- streams
let streamsOpen = 0;

function startStream(res, body, includeUsage, promptTokens) {
  const created = Math.floor(Date.now() / 1000);
  const model = JSON.stringify(typeof body.model === 'string' ? body.model : 'mock');
  const head = `data: {"id":"chatcmpl-mock","object":"chat.completion.chunk","created":${created},` +
    `"model":${model},"choices":`;
  const st = {
    res,
    closed: false,
    k: 0, // content chunks sent
    t0: 0, // performance.now() when the role chunk went out
    pre: `${head}[{"index":0,"delta":{"content":`,
    post: '},"logprobs":null,"finish_reason":null}]}\n\n',
    head,
    includeUsage,
    promptTokens,
    timer: null,
  };
  streamsOpen++;
  res.on('close', () => {
    if (!st.closed) { st.closed = true; streamsOpen--; }
    if (st.timer !== null) { clearTimeout(st.timer); st.timer = null; }
  });
  res.writeHead(200, SSE_HEADERS);
  res.flushHeaders();
  if (opts.ttftMs > 0) {
    st.timer = setTimeout(() => { st.timer = null; begin(st); }, opts.ttftMs);
  } else {
    begin(st);
  }
}

function begin(st) {
  if (st.closed) { return; }
  if (st.res.destroyed) { st.closed = true; streamsOpen--; return; }
  st.t0 = performance.now();
  st.res.write(`${st.head}[{"index":0,"delta":{"role":"assistant","content":""},` +
    '"logprobs":null,"finish_reason":null}]}\n\n');
  step(st);
}

function step(st) {
  const res = st.res;
  if (res.destroyed) { // client gone, 'close' not emitted yet
    st.closed = true;
    streamsOpen--;
    return;
  }
  if (st.k < opts.chunks) {
    res.write(st.pre + TOKENS[st.k % TOKENS.length] + st.post);
    st.k++;
    if (st.k < opts.chunks) {
      schedule(st, st.t0 + st.k * opts.gapMs);
      return;
    }
  }
  res.write(`${st.head}[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}\n\n`);
  if (st.includeUsage) {
    res.write(`${st.head}[],"usage":{"prompt_tokens":${st.promptTokens},` +
      `"completion_tokens":${opts.chunks},"total_tokens":${st.promptTokens + opts.chunks}}}\n\n`);
  }
  st.closed = true;
  streamsOpen--;
  res.end(DONE);
}

function countPromptTokens(body) {
  let chars = 0;
  if (Array.isArray(body.messages)) {
    for (const m of body.messages) {
      if (m && typeof m.content === 'string') { chars += m.content.length; }
    }
  }
  return Math.max(1, Math.ceil(chars / 4));
}

function sendJson(res, status, obj) {
  const data = JSON.stringify(obj);
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(data),
  });
  res.end(data);
}

function completion(res, body, promptTokens) {
  const send = () => {
    if (res.destroyed) { return; }
    sendJson(res, 200, {
      id: 'chatcmpl-mock',
      object: 'chat.completion',
      created: Math.floor(Date.now() / 1000),
      model: typeof body.model === 'string' ? body.model : 'mock',
      choices: [{
        index: 0,
        message: { role: 'assistant', content: FULL_TEXT },
        logprobs: null,
        finish_reason: 'stop',
      }],
      usage: {
        prompt_tokens: promptTokens,
        completion_tokens: opts.chunks,
        total_tokens: promptTokens + opts.chunks,
      },
    });
  };
  if (opts.ttftMs > 0) {
    const t = setTimeout(send, opts.ttftMs);
    res.on('close', () => clearTimeout(t));
  } else {
    send();
  }
}

function errorBody(message, type) {
  return { error: { message, type, param: null, code: null } };
}

function onRequest(req, res) {
  const path = req.url.split('?', 1)[0];
  if (req.method === 'GET' && (path.endsWith('/models') || path === '/models')) {
    sendJson(res, 200, {
      object: 'list',
      data: [{ id: 'mock', object: 'model', created: 0, owned_by: 'mock' }],
    });
    return;
  }
  if (!path.endsWith('chat/completions')) {
    sendJson(res, 404, errorBody(`no route ${req.method} ${path}`, 'invalid_request_error'));
    return;
  }
  if (req.method !== 'POST') {
    sendJson(res, 405, errorBody('method not allowed', 'invalid_request_error'));
    return;
  }
  const parts = [];
  req.on('data', (c) => parts.push(c));
  req.on('end', () => {
    let body;
    try {
      body = JSON.parse(parts.length === 1 ? parts[0] : Buffer.concat(parts));
      if (body === null || typeof body !== 'object') { throw new Error('not an object'); }
    } catch (e) {
      sendJson(res, 400, errorBody(`invalid JSON body: ${e.message}`, 'invalid_request_error'));
      return;
    }
    const promptTokens = countPromptTokens(body);
    if (body.stream === true) {
      const so = body.stream_options;
      startStream(res, body, !!(so && so.include_usage), promptTokens);
    } else {
      completion(res, body, promptTokens);
    }
  });
}

const server = http.createServer({ noDelay: true }, onRequest);
server.maxConnections = Infinity;
server.keepAliveTimeout = 60000;
server.headersTimeout = 0;
server.requestTimeout = 0;
server.timeout = 0;
server.on('connection', (sock) => sock.setNoDelay(true));
server.on('clientError', (err, sock) => {
  if (sock.writable && err.code !== 'ECONNRESET') {
    sock.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
  } else {
    sock.destroy();
  }
});
server.on('error', (err) => {
  process.stderr.write(`mock_upstream: ${err.message}\n`);
  process.exit(1);
});

function shutdown() {
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
if (process.env.MOCK_DEBUG) {
  setInterval(() => {
    process.stderr.write(`open=${streamsOpen} buckets=${buckets.size} ` +
      `rss=${(process.memoryUsage().rss / 1048576).toFixed(0)}MB\n`);
  }, 2000).unref();
}

server.listen({ host: opts.host, port: opts.port, backlog: 4096 }, () => {
  process.stdout.write(`ready ${server.address().port}\n`);
});
