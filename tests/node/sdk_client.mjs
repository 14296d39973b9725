// Streams one answer from a sluicegate gateway with a real JavaScript SDK and reports what the
// SDK gave back, for tests/test_node_sdks.py.
//
//   node tests/node/sdk_client.mjs CASE BASE_URL [MODEL] [OPTIONS_JSON]
//
// BASE_URL is the gateway's OpenAI base URL (`http://127.0.0.1:PORT/v1`; SLUICEGATE_BASE_URL
// when omitted or "-"). OPTIONS_JSON may set `prompt`, `max_tokens`, `temperature`.
// CASE is one of:
//   openai-responses        openai-node `client.responses.stream()`: text deltas, finalResponse()
//   openai-responses-tool   the same with a function tool: argument deltas, the function_call item
//   openai-chat             openai-node `chat.completions.create({stream: true})` with usage
//   ai-sdk-text             the AI SDK's `streamText` on `createOpenAI({baseURL, apiKey})(MODEL)`
//                           (the provider's default model: the Responses API), its `textStream`
//   ai-sdk-tool             `streamText` with a tool without `execute`: the streamed tool call
//   ai-sdk-steps            `streamText` with a tool that runs (`execute`) and `stopWhen:
//                           stepCountIs(2)`: the call, its result sent back, the answer
//   ai-sdk-multiturn        two `streamText` turns, the second given the first's
//                           `response.messages` (so its answer goes back as an `item_reference`)
//
// stdout is JSON lines, written as the SDK yields them: `{"delta": "..."}` for each text (or
// argument) increment, then one `{"summary": {...}}`. A failure prints `{"error": {...}}` (with
// the AI SDK's `errors`, if any) and exits 1.

import { createOpenAI } from "@ai-sdk/openai";
import { jsonSchema, stepCountIs, streamText, tool } from "ai";
import OpenAI from "openai";

const [caseName, baseArg, modelArg, optionsArg] = process.argv.slice(2);
const baseURL = baseArg && baseArg !== "-" ? baseArg : process.env.SLUICEGATE_BASE_URL;
const model = modelArg || "default";
const options = optionsArg ? JSON.parse(optionsArg) : {};
const prompt = options.prompt ?? "Say hello.";
const apiKey = process.env.SLUICEGATE_API_KEY || "sk-unused";
const errors = []; // what the AI SDK passed to onError, in the summary (or the error line)
const onError = ({ error }) => errors.push(describe(error));

const WEATHER_PARAMETERS = {
  type: "object",
  properties: { city: { type: "string" } },
  required: ["city"],
  additionalProperties: false,
};

function emit(obj) {
  // Writes to a pipe are synchronous on Linux, so each line leaves as its increment arrives.
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function openaiClient() {
  return new OpenAI({ baseURL, apiKey, maxRetries: 0 });
}

async function openaiResponses(withTool) {
  const params = { model, input: prompt };
  if (options.max_tokens !== undefined) params.max_output_tokens = options.max_tokens;
  if (options.temperature !== undefined) params.temperature = options.temperature;
  if (withTool) {
    params.tools = [{ type: "function", name: "get_weather", description: "Weather",
                      parameters: WEATHER_PARAMETERS, strict: true }];
  }
  const stream = openaiClient().responses.stream(params);
  const types = [];
  let deltas = 0;
  for await (const event of stream) {
    types.push(event.type);
    if (event.type === "response.output_text.delta"
        || event.type === "response.function_call_arguments.delta") {
      deltas += 1;
      emit({ delta: event.delta });
    }
  }
  const final = await stream.finalResponse();
  return {
    deltas, event_types: types, id: final.id, status: final.status, model: final.model,
    text: final.output_text, usage: final.usage, incomplete_details: final.incomplete_details,
    output: final.output.map((item) => item.type === "function_call"
      ? { type: item.type, call_id: item.call_id, name: item.name, arguments: item.arguments,
          status: item.status }
      : { type: item.type, status: item.status,
          text: (item.content ?? []).map((part) => part.text ?? "").join("") }),
  };
}

async function openaiChat() {
  const params = { model, messages: [{ role: "user", content: prompt }], stream: true,
                   stream_options: { include_usage: true } };
  if (options.max_tokens !== undefined) params.max_tokens = options.max_tokens;
  if (options.temperature !== undefined) params.temperature = options.temperature;
  const stream = await openaiClient().chat.completions.create(params);
  let deltas = 0;
  let text = "";
  let finishReason = null;
  let usage = null;
  let id = null;
  for await (const chunk of stream) {
    id = chunk.id;
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      if (choice.delta?.content) {
        deltas += 1;
        text += choice.delta.content;
        emit({ delta: choice.delta.content });
      }
      if (choice.finish_reason) finishReason = choice.finish_reason;
    }
  }
  return { deltas, id, text, finish_reason: finishReason, usage };
}

function aiModel() {
  return createOpenAI({ baseURL, apiKey })(model);
}

function aiSettings() {
  const settings = { model: aiModel(), prompt, maxRetries: 0 };
  if (options.max_tokens !== undefined) settings.maxOutputTokens = options.max_tokens;
  if (options.temperature !== undefined) settings.temperature = options.temperature;
  return settings;
}

async function aiSummary(result) {
  // Each promise rejects when the stream failed; the error is reported, not thrown past it.
  const [finishReason, rawFinishReason, usage, response, warnings] = await Promise.all([
    result.finishReason, result.rawFinishReason, result.usage, result.response,
    result.warnings]);
  return { errors, finish_reason: finishReason, raw_finish_reason: rawFinishReason ?? null,
           usage, warnings: warnings ?? [], response_id: response.id,
           model_id: response.modelId };
}

async function aiSdkText() {
  const result = streamText({ ...aiSettings(), onError });
  let deltas = 0;
  let text = "";
  for await (const part of result.textStream) {
    deltas += 1;
    text += part;
    emit({ delta: part });
  }
  return { deltas, text, ...(await aiSummary(result)) };
}

async function aiSdkTool() {
  const result = streamText({
    ...aiSettings(),
    tools: { get_weather: tool({ description: "Weather",
                                 inputSchema: jsonSchema(WEATHER_PARAMETERS) }) },
    onError,
  });
  let deltas = 0;
  const parts = [];
  for await (const part of result.fullStream) {
    parts.push(part.type);
    if (part.type === "tool-input-delta") {
      deltas += 1;
      emit({ delta: part.delta });
    }
  }
  const calls = (await result.toolCalls).map((call) => ({
    tool_call_id: call.toolCallId, tool_name: call.toolName, input: call.input,
    invalid: call.invalid ?? false }));
  return { deltas, part_types: parts, tool_calls: calls, ...(await aiSummary(result)) };
}

async function aiSdkSteps() {
  const result = streamText({
    ...aiSettings(),
    stopWhen: stepCountIs(2),
    tools: { get_weather: tool({ description: "Weather",
                                 inputSchema: jsonSchema(WEATHER_PARAMETERS),
                                 execute: async ({ city }) => ({ city, celsius: 12 }) }) },
    onError,
  });
  let deltas = 0;
  let text = "";
  for await (const part of result.textStream) {
    deltas += 1;
    text += part;
    emit({ delta: part });
  }
  const steps = (await result.steps).map((step) => ({
    finish_reason: step.finishReason, text: step.text,
    tool_calls: step.toolCalls.map((call) => ({ tool_name: call.toolName, input: call.input })),
    tool_results: step.toolResults.map((r) => ({ tool_name: r.toolName, output: r.output })),
  }));
  const total = await result.totalUsage;
  return { deltas, text, steps, total_usage: total, ...(await aiSummary(result)) };
}

async function aiSdkMultiturn() {
  const first = streamText({ ...aiSettings(), onError });
  const firstText = await first.text;
  const messages = [{ role: "user", content: prompt }, ...(await first.response).messages,
                    { role: "user", content: options.follow_up ?? "And then?" }];
  const { prompt: _, ...settings } = aiSettings();
  const second = streamText({ ...settings, messages, onError });
  let deltas = 0;
  let text = "";
  for await (const part of second.textStream) {
    deltas += 1;
    text += part;
    emit({ delta: part });
  }
  return { first_text: firstText, sent_messages: messages, deltas, text,
           ...(await aiSummary(second)) };
}

function describe(error) {
  if (!(error instanceof Error)) {
    return typeof error === "object" && error !== null ? { value: error }
      : { message: String(error) };
  }
  return { name: error.name, message: error.message, status: error.status ?? error.statusCode,
           cause: error.cause instanceof Error ? error.cause.message : undefined };
}

const CASES = {
  "openai-responses": () => openaiResponses(false),
  "openai-responses-tool": () => openaiResponses(true),
  "openai-chat": openaiChat,
  "ai-sdk-text": aiSdkText,
  "ai-sdk-tool": aiSdkTool,
  "ai-sdk-steps": aiSdkSteps,
  "ai-sdk-multiturn": aiSdkMultiturn,
};

async function main() {
  const run = CASES[caseName];
  if (!run || !baseURL) {
    process.stderr.write(
      `usage: sdk_client.mjs {${Object.keys(CASES).join("|")}} BASE_URL [MODEL] [OPTIONS]\n`);
    process.exit(2);
  }
  try {
    emit({ summary: await run() });
  } catch (error) {
    emit({ error: describe(error), ...(errors.length ? { errors } : {}) });
    process.exitCode = 1;
  }
}

await main();
