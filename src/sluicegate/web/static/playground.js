// The playground (/playground): chat, Compare and Live views over the gateway it is served by.
// The API key is typed once, kept in sessionStorage (this tab only), sent as a header.
import { Sluicegate } from "./sluicegate.js";

const KEY = "sluicegate.apiKey";
const $ = (selector, root = document) => root.querySelector(selector);
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
};

const client = new Sluicegate({ baseURL: location.origin, apiKey: sessionStorage.getItem(KEY) });
let models = [];

function notice(text) {
  const box = $("#notice");
  box.textContent = text ?? "";
  box.hidden = !text;
}

function formatStats(stats, error) {
  const parts = [];
  if (stats.ttftMs !== null) parts.push(`TTFT ${Math.round(stats.ttftMs)} ms`);
  if (stats.tokensPerS !== null) parts.push(`${stats.tokensPerS.toFixed(1)} tok/s`);
  parts.push(`${stats.tokens} tokens${stats.usage && !stats.estimated ? "" : " (est.)"}`);
  const cost = stats.usage?.cost ?? stats.usage?.total_cost;
  if (cost !== undefined && cost !== null) parts.push(`$${Number(cost).toFixed(5)}`);
  if (stats.provider) parts.push(stats.provider + (stats.upstreamModel ? `/${stats.upstreamModel}` : ""));
  if (stats.attempts !== null) parts.push(`${stats.attempts} attempt${stats.attempts === 1 ? "" : "s"}`);
  if (stats.resumes) parts.push(`resumed ${stats.resumes}×`);
  if (error) parts.push(error);
  return parts.join(" · ");
}

/** Stream `params` into `textNode`, stats into `statsNode`; returns the final text. */
async function run(params, options, textNode, statsNode) {
  const stream = client.chat.stream(params, options);
  statsNode.textContent = "waiting for the first token…";
  let error = null;
  try {
    for await (const chunk of stream) {
      const piece = chunk.choices?.[0]?.delta?.content;
      if (piece) textNode.textContent += piece;
      if (stream.stats.ttftMs !== null) statsNode.textContent = formatStats(stream.stats);
    }
  } catch (err) {
    error = err.code === "aborted" ? "stopped" : `error: ${err.message}`;
    if (err.status === 401) showKeybar("The gateway wants an API key.");
    textNode.textContent = err.partialText ?? textNode.textContent;
  }
  statsNode.textContent = formatStats(stream.stats, error);
  statsNode.dataset.done = error ? "error" : "ok";
  return stream.text;
}

// -- key ---------------------------------------------------------------------------------

function showKeybar(message) {
  $("#keybar").hidden = false;
  $("#key-status").textContent = message ?? "";
  $("#api-key").focus();
}

$("#key-toggle").addEventListener("click", () => {
  const bar = $("#keybar");
  bar.hidden = !bar.hidden;
});
$("#keybar").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("#api-key").value.trim();
  if (key) sessionStorage.setItem(KEY, key); else sessionStorage.removeItem(KEY);
  client.apiKey = key || null;
  $("#api-key").value = "";
  $("#keybar").hidden = true;
  loadModels();
});
$("#key-clear").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  client.apiKey = null;
  $("#key-status").textContent = "forgotten";
});

// -- models ------------------------------------------------------------------------------

async function loadModels() {
  try {
    models = await client.models();
    notice(null);
  } catch (err) {
    if (err.status === 401) {
      showKeybar(sessionStorage.getItem(KEY) ? "That key was refused." : "This gateway needs an API key.");
    } else {
      notice(`Could not list the models: ${err.message}`);
    }
    return;
  }
  const select = $("#model");
  const current = select.value;
  select.replaceChildren(...models.map((id) => el("option", { value: id, textContent: id })));
  if (models.includes(current)) select.value = current;
  const box = $("#compare-models");
  box.replaceChildren(el("legend", { textContent: "Models (2–4)" }), ...models.map((id, i) =>
    el("label", { className: "check" },
      el("input", { type: "checkbox", value: id, checked: i < 2 }), ` ${id}`)));
}

// -- tabs --------------------------------------------------------------------------------

for (const tab of document.querySelectorAll("[role=tab]")) {
  tab.addEventListener("click", () => {
    for (const other of document.querySelectorAll("[role=tab]")) {
      other.setAttribute("aria-selected", String(other === tab));
    }
    for (const view of document.querySelectorAll(".view")) {
      view.hidden = view.id !== `view-${tab.dataset.view}`;
    }
    if (tab.dataset.view === "live") startLive(); else stopLive();
  });
}

// -- chat --------------------------------------------------------------------------------

const history = [];
let chatController = null;

function bubble(role, text = "") {
  const textNode = el("div", { className: "text", textContent: text });
  const node = el("article", { className: `msg ${role}` }, textNode);
  let statsNode = null;
  if (role === "assistant") {
    statsNode = el("div", { className: "stats" });
    node.append(statsNode);
  }
  $("#messages").append(node);
  node.scrollIntoView({ block: "end" });
  return { node, textNode, statsNode };
}

async function sendChat() {
  const prompt = $("#prompt").value.trim();
  if (!prompt || chatController) return;
  $("#prompt").value = "";
  bubble("user", prompt);
  history.push({ role: "user", content: prompt });
  const system = $("#system").value.trim();
  const messages = system ? [{ role: "system", content: system }, ...history] : [...history];
  const { textNode, statsNode } = bubble("assistant");
  chatController = new AbortController();
  $("#send").disabled = true;
  $("#stop").disabled = false;
  try {
    const text = await run({ model: $("#model").value, messages },
      { signal: chatController.signal, resumable: $("#resumable").checked }, textNode, statsNode);
    history.push({ role: "assistant", content: text });
  } finally {
    chatController = null;
    $("#send").disabled = false;
    $("#stop").disabled = true;
  }
}

$("#chat-form").addEventListener("submit", (event) => { event.preventDefault(); sendChat(); });
$("#prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); sendChat(); }
});
$("#stop").addEventListener("click", () => chatController?.abort());
$("#clear").addEventListener("click", () => {
  chatController?.abort();
  history.length = 0;
  $("#messages").replaceChildren();
});

// -- compare -----------------------------------------------------------------------------

let compareController = null;

$("#compare-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const prompt = $("#compare-prompt").value.trim();
  const chosen = [...document.querySelectorAll("#compare-models input:checked")].map((i) => i.value);
  if (!prompt || compareController) return;
  if (chosen.length < 2 || chosen.length > 4) {
    notice("Choose 2 to 4 models to compare.");
    return;
  }
  notice(null);
  compareController = new AbortController();
  $("#compare-run").disabled = true;
  $("#compare-stop").disabled = false;
  const system = $("#system").value.trim();
  const messages = [...(system ? [{ role: "system", content: system }] : []),
    { role: "user", content: prompt }];
  const columns = chosen.map((model) => {
    const textNode = el("div", { className: "text" });
    const statsNode = el("div", { className: "stats" });
    return { model, textNode, statsNode, node: el("article", { className: "column" },
      el("h3", { textContent: model }), textNode, statsNode) };
  });
  $("#columns").replaceChildren(...columns.map((c) => c.node));
  $("#columns").style.setProperty("--n", String(columns.length));
  try {
    await Promise.all(columns.map((c) => run({ model: c.model, messages },
      { signal: compareController.signal }, c.textNode, c.statsNode)));
  } finally {
    compareController = null;
    $("#compare-run").disabled = false;
    $("#compare-stop").disabled = true;
  }
});
$("#compare-stop").addEventListener("click", () => compareController?.abort());

// -- live --------------------------------------------------------------------------------

let liveTimer = null;

function startLive() {
  if (liveTimer === null) {
    refreshLive();
    liveTimer = setInterval(refreshLive, 1000);
  }
}

function stopLive() {
  clearInterval(liveTimer);
  liveTimer = null;
}

const ms = (s) => (s === null || s === undefined ? "–" : `${Math.round(s * 1000)} ms`);

async function refreshLive() {
  let stats;
  try {
    stats = await client.stats();
  } catch (err) {
    if (err.status === 401) showKeybar("The Live panel needs the API key.");
    return;
  }
  const t = stats.totals;
  $("#live-figures").replaceChildren(...[
    ["in flight", stats.in_flight.length],
    ["requests (5 min)", t.requests],
    ["TTFT p50", ms(t.ttft_p50_s)],
    ["TTFT p99", ms(t.ttft_p99_s)],
    ["tokens/s p50", t.tokens_per_s_p50 === null ? "–" : t.tokens_per_s_p50.toFixed(1)],
    ["failed / cancelled", `${t.failed} / ${t.cancelled}`],
  ].map(([label, value]) => el("div", { className: "figure" },
    el("b", { textContent: String(value) }), el("span", { textContent: label }))));
  $("#live-count").textContent = String(stats.in_flight.length);
  $("#live-table tbody").replaceChildren(...stats.in_flight.map((r) => el("tr", {},
    el("td", { textContent: r.id.slice(0, 18), title: r.id }),
    el("td", { textContent: r.model }), el("td", { textContent: r.provider ?? "…" }),
    el("td", { textContent: `${r.age_s.toFixed(1)} s` }), el("td", { textContent: ms(r.ttft_s) }),
    el("td", { textContent: String(r.chunks) }))));
  const series = stats.series;
  chart($("#chart-ttft"), [series.map((b) => b.ttft_p50_s), series.map((b) => b.ttft_p99_s)],
    (v) => `max ${Math.round(v * 1000)} ms`);
  chart($("#chart-rate"), [series.map((b) => b.tokens_per_s)], (v) => `max ${v.toFixed(1)} tok/s`);
}

/** Polylines of `lines` (null: gap) in a 300×90 SVG, on one shared scale. */
function chart(svg, lines, format) {
  const all = lines.flat().filter((v) => v !== null);
  const top = Math.max(1e-9, ...all) * 1.1;
  const n = Math.max(1, lines[0].length - 1);
  const SVG = "http://www.w3.org/2000/svg";
  const dots = [];
  const paths = lines.map((values, k) => {
    let d = "";
    values.forEach((v, i) => {
      if (v === null) return;
      const x = (i / n) * 296 + 2, y = 88 - (v / top) * 76;
      d += `${d ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)} `;
      const dot = document.createElementNS(SVG, "circle");
      Object.entries({ cx: x.toFixed(1), cy: y.toFixed(1), r: "1.6", class: `dot dot${k}` })
        .forEach(([name, value]) => dot.setAttribute(name, value));
      dots.push(dot);
    });
    const path = document.createElementNS(SVG, "path");
    path.setAttribute("d", d || "M0,88");
    path.setAttribute("class", `line line${k}`);
    return path;
  });
  const label = document.createElementNS("http://www.w3.org/2000/svg", "text");
  label.setAttribute("x", "2");
  label.setAttribute("y", "10");
  label.textContent = all.length ? format(top / 1.1) : "no data yet";
  svg.replaceChildren(...paths, ...dots, label);
}

loadModels();
