// The page's logic: a conversation kept in this browser, each answer streamed from the
// gateway's `POST /generate` (Server-Sent Events read with fetch: a conversation is a
// body, which no URL, and so no EventSource, could carry at any length).
//
// Every answer is one `run`. Handlers ignore events from any run but the current one,
// so a late event from a stopped run can never write into a new one. Stop aborts the
// request, which closes the connection: the gateway drops its upstream request and
// the generator stops decoding.
import { renderMarkdown } from "./markdown.js";
import { readEventStream } from "./sse.js";
import * as store from "./store.js";

const config = window.APP_CONFIG || {};
// No trailing slash, so `gateway + "/generate"` is right; "" = same origin as the page.
const gateway = String(config.gatewayUrl || "").replace(/\/+$/, "");
const gatewayLabel = gateway || window.location.origin;

const $ = (id) => document.getElementById(id);
const ui = {
  form: $("controls"),
  prompt: $("prompt"),
  system: $("system"),
  start: $("start"),
  stop: $("stop"),
  regenerate: $("regenerate"),
  newChat: $("new-chat"),
  conversation: $("conversation"),
  empty: $("empty"),
  status: $("status"),
  error: $("error"),
  ttft: $("stat-ttft"),
  rate: $("stat-rate"),
  tokens: $("stat-tokens"),
  finish: $("stat-finish"),
  template: $("turn-template"),
};
// The request's parameters: each control by the field name the API (and its errors) use.
const paramControls = {
  max_new_tokens: $("max-tokens"),
  temperature: $("temperature"),
  top_p: $("top-p"),
  repetition_penalty: $("repetition-penalty"),
  seed: $("seed"),
};
const settingControls = { system: ui.system, ...paramControls };
const FINISH_TEXT = {
  length: "reached max tokens",
  stop: "hit a stop string",
  eos: "the model ended it",
};
const WHO = { user: "You", assistant: "Assistant" };

const state = store.load(); // {turns: [{role, content, state?, stats?}], settings}
let run = null;

// ---- view -----------------------------------------------------------------------

function setStatus(kind, text) {
  ui.status.dataset.state = kind;
  ui.status.textContent = text;
}

function busy() {
  return run !== null && !run.ended;
}

function refreshButtons() {
  const active = busy();
  ui.start.disabled = active;
  ui.stop.disabled = !active;
  ui.regenerate.disabled = active || !state.turns.some((turn) => turn.role === "user");
  ui.conversation.setAttribute("aria-busy", String(active));
}

function showError(text) {
  ui.error.textContent = text;
  ui.error.hidden = false;
}

function clearError() {
  ui.error.hidden = true;
  ui.error.textContent = "";
  for (const control of [ui.prompt, ...Object.values(settingControls)]) {
    control.removeAttribute("aria-invalid");
  }
}

/** Mark the control an error names (`max_new_tokens`, `messages.3.content`...). */
function flagField(field) {
  if (!field) return;
  const control = field.startsWith("messages") ? ui.prompt : paramControls[field];
  if (control) control.setAttribute("aria-invalid", "true");
}

function statsText(stats) {
  if (!stats) return "";
  const parts = [];
  if (stats.ttftMs != null) parts.push(`${Math.round(stats.ttftMs)} ms to first token`);
  if (stats.rate != null) parts.push(`${stats.rate.toFixed(1)} tok/s`);
  if (stats.tokens != null) parts.push(`${stats.tokens} tokens`);
  if (stats.finish) parts.push(stats.finish);
  return parts.join(" · ");
}

function setStats(stats = {}) {
  ui.ttft.textContent = stats.ttftMs == null ? "–" : `${Math.round(stats.ttftMs)} ms`;
  ui.rate.textContent = stats.rate == null ? "–" : stats.rate.toFixed(1);
  ui.tokens.textContent = stats.tokens == null ? "–" : String(stats.tokens);
  ui.finish.textContent = stats.finish || "–";
}

/** Draw one turn into its element: the user's text as written, answers as Markdown. */
function drawTurn(element, turn) {
  element.dataset.role = turn.role;
  element.dataset.state = turn.state || "done";
  const content = element.querySelector(".content");
  if (turn.role === "assistant") {
    content.innerHTML = renderMarkdown(turn.content);
  } else {
    content.textContent = turn.content;
  }
  element.querySelector(".turn-stats").textContent = statsText(turn.stats);
}

function turnElement(turn) {
  const element = ui.template.content.firstElementChild.cloneNode(true);
  element.querySelector(".who").textContent = WHO[turn.role];
  const copy = element.querySelector(".copy");
  copy.setAttribute("aria-label", `Copy this ${turn.role === "user" ? "message" : "answer"}`);
  copy.addEventListener("click", () => copyText(copy, turn.content));
  drawTurn(element, turn);
  turn.element = element;
  return element;
}

function drawConversation() {
  const elements = state.turns.map(turnElement);
  ui.conversation.replaceChildren(...(elements.length ? elements : [ui.empty]));
  refreshButtons();
}

async function copyText(button, text) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    button.textContent = "Copy failed";
  }
  setTimeout(() => (button.textContent = "Copy"), 1500);
}

/** Live numbers measured here (TTFT includes the network and the gateway). */
function liveStats(current, finish) {
  const first = current.firstTokenAt;
  const decodeS = first == null ? 0 : (performance.now() - first) / 1000;
  return {
    ttftMs: first == null ? null : first - current.startedAt,
    rate: current.tokens > 1 && decodeS > 0 ? (current.tokens - 1) / decodeS : null,
    tokens: current.tokens,
    finish,
  };
}

// ---- the conversation, kept ---------------------------------------------------------

function persist() {
  const turns = state.turns.map(({ role, content, state: turnState, stats }) => ({
    role, content, state: turnState, stats,
  }));
  store.save({ turns, settings: state.settings });
}

function restoreSettings() {
  for (const [name, control] of Object.entries(settingControls)) {
    if (typeof state.settings[name] === "string") control.value = state.settings[name];
    control.addEventListener("input", () => {
      state.settings[name] = control.value;
      persist();
    });
  }
}

// ---- requests -----------------------------------------------------------------------

/** A number field: empty → left out (the server's default); junk → sent as typed, so
 * the server's 4xx names the field (the server is the one place that validates). */
function numberField(input) {
  const raw = input.value.trim();
  if (raw === "") return undefined;
  const value = Number(raw);
  return Number.isFinite(value) ? value : raw;
}

/** The body of `POST /generate`: the system prompt, every turn with text, the settings. */
function requestBody(turns) {
  const messages = turns
    .filter((turn) => turn.content.trim())
    .map(({ role, content }) => ({ role, content }));
  const system = ui.system.value.trim();
  if (system) messages.unshift({ role: "system", content: system });
  const body = { messages };
  for (const [name, control] of Object.entries(paramControls)) body[name] = numberField(control);
  return body;
}

/** Words for a refused request, from the `{"error": {code, message, field}}` body. */
function describeRefusal(response, body) {
  const error = body && typeof body.error === "object" && body.error ? body.error : null;
  flagField(error && error.field);
  const message = error && error.message ? error.message : response.statusText || "no details";
  let text = `The gateway refused the request (HTTP ${response.status}): ${message}`;
  const retry = response.headers.get("Retry-After");
  if (retry) text += ` — try again in ${retry} s.`;
  return text;
}

// ---- one answer -----------------------------------------------------------------------

function isCurrent(current) {
  return run === current && !current.ended;
}

/** End a run: abort the request (which closes the stream) and keep what it produced. */
function finishRun(current, turnState, stats) {
  current.ended = true;
  current.controller.abort();
  const turn = current.turn;
  turn.state = turnState;
  turn.stats = stats;
  if (turn.content) {
    drawTurn(turn.element, turn);
  } else {
    // Nothing arrived: no empty answer stays in the conversation (Regenerate retries).
    state.turns.splice(state.turns.indexOf(turn), 1);
    turn.element.remove();
    if (!state.turns.length) ui.conversation.replaceChildren(ui.empty);
  }
  setStats(stats);
  persist();
  refreshButtons();
}

function fail(current, text) {
  if (!isCurrent(current)) return;
  finishRun(current, "error", liveStats(current, "error"));
  setStatus("error", "Error.");
  showError(text);
}

/** Stream the next assistant turn of the conversation as it stands. */
async function answer() {
  if (busy()) return;
  const body = requestBody(state.turns);
  const turn = { role: "assistant", content: "", state: "streaming" };
  state.turns.push(turn);
  ui.empty.remove();
  ui.conversation.append(turnElement(turn));
  const current = {
    controller: new AbortController(),
    turn,
    tokens: 0,
    startedAt: performance.now(),
    firstTokenAt: null,
    drawQueued: false,
    ended: false,
  };
  run = current;
  clearError();
  setStats();
  refreshButtons();
  setStatus("connecting", "Connecting to the gateway…");

  let response;
  try {
    response = await fetch(`${gateway}/generate`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify(body),
      signal: current.controller.signal,
    });
  } catch (err) {
    // No answer at all: gateway down, wrong URL, or CORS refused (or Stop pressed).
    fail(current, `Could not reach the gateway at ${gatewayLabel} — is it running? (${err.message})`);
    return;
  }
  if (!isCurrent(current)) return;
  if (!response.ok) {
    const refusal = await response.json().catch(() => null);
    fail(current, describeRefusal(response, refusal));
    return;
  }
  try {
    await readEventStream(response.body, (event) => onEvent(current, event));
  } catch (err) {
    if (!isCurrent(current)) return; // stopped: the abort ended the read
    fail(
      current,
      `Lost the connection to the gateway after ${current.tokens} tokens; ` +
        `the answer above is incomplete. (${err.message})`,
    );
    return;
  }
  fail(current, "The stream ended without its last event; the answer above is incomplete.");
}

function parseData(current, event) {
  try {
    return JSON.parse(event.data);
  } catch {
    fail(current, `The gateway sent malformed ${event.event} data: ${event.data}`);
    return null;
  }
}

/** Re-render the growing answer at most once a frame: Markdown is parsed as a whole. */
function queueDraw(current) {
  if (current.drawQueued) return;
  current.drawQueued = true;
  requestAnimationFrame(() => {
    current.drawQueued = false;
    if (run === current) drawTurn(current.turn.element, current.turn);
  });
}

function onEvent(current, event) {
  if (!isCurrent(current)) return;
  const data = parseData(current, event);
  if (!data) return;
  if (event.event === "status") {
    if (current.tokens > 0) return;
    if (data.state === "loading") setStatus("loading", "Loading the model (cold start)…");
    if (data.state === "queued") {
      setStatus("queued", `Waiting in the queue (position ${data.position})…`);
    }
  } else if (event.event === "token") {
    if (current.firstTokenAt == null) {
      current.firstTokenAt = performance.now();
      setStatus("streaming", "Streaming…");
    }
    current.turn.content += data.text;
    current.tokens += 1;
    queueDraw(current);
    setStats(liveStats(current));
  } else if (event.event === "done") {
    const timings = data.timings || {};
    const usage = data.usage || {};
    const finish = FINISH_TEXT[data.finish_reason] || data.finish_reason;
    finishRun(current, "done", {
      ttftMs: timings.ttft_ms,
      rate: timings.tokens_per_s,
      tokens: usage.completion_tokens ?? current.tokens,
      finish,
    });
    setStatus("done", `Done — ${finish}.`);
  } else if (event.event === "error") {
    flagField(data.field); // refusals only the generator can make still name their field
    let text = `The generation failed: ${data.message} (${data.code}).`;
    if (data.field === "messages") {
      text += " Start a new conversation, or lower Max tokens.";
    }
    fail(current, text);
  }
}

function send() {
  if (busy()) return;
  const text = ui.prompt.value;
  if (!text.trim()) {
    clearError();
    ui.prompt.setAttribute("aria-invalid", "true");
    showError("Write a message first.");
    ui.prompt.focus();
    return;
  }
  state.turns.push({ role: "user", content: text });
  ui.empty.remove();
  ui.conversation.append(turnElement(state.turns.at(-1)));
  ui.prompt.value = "";
  persist();
  answer();
}

/** A new answer to the last message: the last answer, if any, is replaced. */
function regenerate() {
  if (busy()) return;
  const last = state.turns.at(-1);
  if (last && last.role === "assistant") {
    state.turns.pop();
    last.element.remove();
  }
  answer();
}

function stop() {
  const current = run;
  if (!current || current.ended) return;
  finishRun(current, "stopped", liveStats(current, "stopped"));
  setStatus("stopped", `Stopped after ${current.tokens} tokens.`);
}

function newConversation() {
  stop();
  state.turns = [];
  persist();
  drawConversation();
  clearError();
  setStats();
  setStatus("idle", "Ready.");
  ui.prompt.focus();
}

// ---- wiring -----------------------------------------------------------------------------

ui.form.addEventListener("submit", (event) => {
  event.preventDefault();
  send();
});
ui.stop.addEventListener("click", stop);
ui.regenerate.addEventListener("click", regenerate);
ui.newChat.addEventListener("click", newConversation);
document.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    send();
  } else if (event.key === "Escape" && busy()) {
    event.preventDefault();
    stop();
  }
});
// Leaving the page stops the answer (and keeps what arrived) rather than orphaning it.
window.addEventListener("pagehide", stop);

$("gateway-url").textContent = gatewayLabel;
restoreSettings();
// An answer that was streaming when the page went away was kept as it was then.
for (const turn of state.turns) if (turn.state === "streaming") turn.state = "stopped";
drawConversation();
