// The page's logic: POST /start, then an EventSource on the returned stream URL.
//
// Every generation is one `run` object. Handlers ignore events from any run but the
// current one, so a late event from a stopped run can never write into a new one.
// The EventSource is closed on `done`, on `error` and on Stop: left open, the browser
// would reconnect by itself and the gateway would start a second generation.
"use strict";

(() => {
  const config = window.APP_CONFIG || {};
  // No trailing slash, so `gateway + "/start"` is right; "" = same origin as the page.
  const gateway = String(config.gatewayUrl || "").replace(/\/+$/, "");
  const gatewayLabel = gateway || window.location.origin;

  const $ = (id) => document.getElementById(id);
  const ui = {
    form: $("controls"),
    prompt: $("prompt"),
    maxTokens: $("max-tokens"),
    temperature: $("temperature"),
    chat: $("chat"),
    start: $("start"),
    stop: $("stop"),
    status: $("status"),
    error: $("error"),
    output: $("output"),
    ttft: $("stat-ttft"),
    rate: $("stat-rate"),
    tokens: $("stat-tokens"),
    finish: $("stat-finish"),
  };
  // Server field names → the control to flag when a 4xx names that field.
  const fieldControls = {
    prompt: ui.prompt,
    max_new_tokens: ui.maxTokens,
    temperature: ui.temperature,
    chat: ui.chat,
  };
  const FINISH_TEXT = {
    length: "reached max tokens",
    stop: "hit a stop string",
    eos: "the model ended it",
  };

  let run = null;

  // ---- small view helpers -------------------------------------------------------

  function setStatus(state, text) {
    ui.status.dataset.state = state;
    ui.status.textContent = text;
  }

  function setBusy(busy) {
    ui.start.disabled = busy;
    ui.stop.disabled = !busy;
    ui.output.setAttribute("aria-busy", String(busy));
  }

  function showError(text) {
    ui.error.textContent = text;
    ui.error.hidden = false;
  }

  function clearError() {
    ui.error.hidden = true;
    ui.error.textContent = "";
    for (const control of Object.values(fieldControls)) control.removeAttribute("aria-invalid");
  }

  function setStats({ ttftMs, rate, tokens, finish }) {
    ui.ttft.textContent = ttftMs == null ? "–" : `${Math.round(ttftMs)} ms`;
    ui.rate.textContent = rate == null ? "–" : rate.toFixed(1);
    ui.tokens.textContent = tokens == null ? "–" : String(tokens);
    ui.finish.textContent = finish || "–";
  }

  /** Live numbers measured here (TTFT includes the network and the gateway). */
  function liveStats(current, finish) {
    const now = performance.now();
    const first = current.firstTokenAt;
    const decodeS = first == null ? 0 : (now - first) / 1000;
    setStats({
      ttftMs: first == null ? null : first - current.startedAt,
      rate: current.tokens > 1 && decodeS > 0 ? (current.tokens - 1) / decodeS : null,
      tokens: current.tokens,
      finish,
    });
  }

  // ---- requests ------------------------------------------------------------------

  /** A number field: empty → left out (server default); junk → sent as typed so the
   * server's 4xx names the field (the server is the one place that validates). */
  function numberField(input) {
    const raw = input.value.trim();
    if (raw === "") return undefined;
    const value = Number(raw);
    return Number.isFinite(value) ? value : raw;
  }

  function readParams() {
    return {
      prompt: ui.prompt.value,
      max_new_tokens: numberField(ui.maxTokens),
      temperature: numberField(ui.temperature),
      chat: ui.chat.checked,
    };
  }

  /** Resolve the stream URL against the gateway, keeping a path prefix such as an
   * API Gateway stage ("https://x.example/prod" + "/generate?id=…"). */
  function streamUrl(path) {
    if (/^https?:\/\//i.test(path)) return path;
    const base = gateway || window.location.origin;
    return base + (path.startsWith("/") ? "" : "/") + path;
  }

  /** Mark the control a server error names (`field`), if the page has one. */
  function flagField(error) {
    if (error && error.field && fieldControls[error.field]) {
      fieldControls[error.field].setAttribute("aria-invalid", "true");
    }
  }

  /** Words for a refused request, from the `{"error": {code, message, field}}` body. */
  function describeRefusal(response, body) {
    const error = body && typeof body.error === "object" && body.error ? body.error : null;
    flagField(error);
    const message = error && error.message ? error.message : response.statusText || "no details";
    let text = `The gateway refused the request (HTTP ${response.status}): ${message}`;
    const retry = response.headers.get("Retry-After");
    if (retry) text += ` — try again in ${retry} s.`;
    return text;
  }

  // ---- one generation --------------------------------------------------------------

  function isCurrent(current) {
    return run === current && !current.ended;
  }

  /** End a run: close the stream (no reconnect) and cancel a pending /start. */
  function finishRun(current) {
    current.ended = true;
    if (current.source) current.source.close();
    current.controller.abort();
    setBusy(false);
  }

  function fail(current, text) {
    if (!isCurrent(current)) return;
    finishRun(current);
    liveStats(current, "error");
    setStatus("error", "Error.");
    showError(text);
  }

  async function start() {
    if (run && !run.ended) return;
    const current = {
      controller: new AbortController(),
      source: null,
      text: document.createTextNode(""),
      tokens: 0,
      startedAt: performance.now(),
      firstTokenAt: null,
      ended: false,
    };
    run = current;
    ui.output.replaceChildren(current.text);
    clearError();
    setStats({});
    setBusy(true);
    setStatus("connecting", "Connecting to the gateway…");

    let response;
    let body = null;
    try {
      response = await fetch(`${gateway}/start`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(readParams()),
        signal: current.controller.signal,
      });
      body = await response.json().catch(() => null);
    } catch (err) {
      // A fetch that never got an answer: gateway down, wrong URL, or CORS refused.
      fail(
        current,
        `Could not reach the gateway at ${gatewayLabel} — is it running? (${err.message})`,
      );
      return;
    }
    if (!isCurrent(current)) return; // stopped while /start was in flight
    if (!response.ok) {
      fail(current, describeRefusal(response, body));
      return;
    }
    if (!body || typeof body.stream_url !== "string") {
      fail(current, "The gateway's answer to /start has no stream_url.");
      return;
    }
    openStream(current, streamUrl(body.stream_url));
  }

  function parseData(current, event) {
    try {
      return JSON.parse(event.data);
    } catch {
      fail(current, `The gateway sent malformed ${event.type} data: ${event.data}`);
      return null;
    }
  }

  function openStream(current, url) {
    const source = new EventSource(url);
    current.source = source;

    source.addEventListener("status", (event) => {
      if (!isCurrent(current) || current.tokens > 0) return;
      const data = parseData(current, event);
      if (!data) return;
      if (data.state === "loading") {
        setStatus("loading", "Loading the model (cold start)…");
      } else if (data.state === "queued") {
        setStatus("queued", `Waiting in the queue (position ${data.position})…`);
      }
    });

    source.addEventListener("token", (event) => {
      if (!isCurrent(current)) return;
      const data = parseData(current, event);
      if (!data) return;
      if (current.firstTokenAt == null) {
        current.firstTokenAt = performance.now();
        setStatus("streaming", "Streaming…");
      }
      current.text.appendData(data.text);
      current.tokens += 1;
      liveStats(current);
    });

    source.addEventListener("done", (event) => {
      if (!isCurrent(current)) return;
      const data = parseData(current, event);
      if (!data) return;
      finishRun(current);
      const timings = data.timings || {};
      const usage = data.usage || {};
      const finish = FINISH_TEXT[data.finish_reason] || data.finish_reason;
      setStats({
        ttftMs: timings.ttft_ms,
        rate: timings.tokens_per_s,
        tokens: usage.completion_tokens ?? current.tokens,
        finish,
      });
      setStatus("done", `Done — ${finish}.`);
    });

    // Two different things arrive here: the server's named `error` event (a
    // MessageEvent that carries `data`) and the browser's own connection error (a
    // plain Event, no `data`), which would otherwise trigger a reconnect.
    source.addEventListener("error", (event) => {
      if (!isCurrent(current)) return;
      if (typeof event.data === "string") {
        const data = parseData(current, event);
        if (!data) return;
        flagField(data); // refusals only the generator can make still name their field
        fail(current, `The generation failed: ${data.message} (${data.code}).`);
      } else if (current.tokens > 0) {
        fail(
          current,
          `Lost the connection to the gateway after ${current.tokens} tokens; ` +
            "the text above is incomplete.",
        );
      } else {
        // EventSource cannot read the body of a non-200 answer, so say what we know.
        fail(
          current,
          `The gateway at ${gatewayLabel} did not open the stream: it is unreachable ` +
            "or refused the request (its log says why).",
        );
      }
    });
  }

  function stop() {
    const current = run;
    if (!current || current.ended) return;
    finishRun(current);
    liveStats(current, "stopped");
    setStatus("stopped", `Stopped after ${current.tokens} tokens.`);
  }

  // ---- wiring --------------------------------------------------------------------

  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    start();
  });
  ui.stop.addEventListener("click", stop);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      start();
    } else if (event.key === "Escape" && run && !run.ended) {
      event.preventDefault();
      stop();
    }
  });
  // Closing the tab closes the stream too; this makes it explicit and immediate.
  window.addEventListener("pagehide", () => run && !run.ended && finishRun(run));

  $("gateway-url").textContent = gatewayLabel;
  setBusy(false);
})();
