// Vigil's operator dashboard. One file, no dependencies, nothing loaded from
// elsewhere: the charts are SVG drawn here (smaller than any charting
// library for three charts and a histogram).
//
// Data comes from the admin listener, always with the token as a header:
// a server-sent event stream (read with fetch, since EventSource cannot
// send headers) gives the last hour of samples, then one frame a second.
// Everything the page keeps is bounded: HISTORY_CAP samples, REMOVALS_CAP
// removals, the 50 rows of one table page.
"use strict";

const HISTORY_CAP = 3600;
const REMOVALS_CAP = 50;
const TOKEN_KEY = "vigil-admin-token";
const PAGE_ROWS = 50;
const TIER_ORDER = ["fast", "regular", "keep-alive"];
const PALETTE = ["#e4572e", "#4c8bf5", "#f3a712", "#29a36a", "#a259c4", "#17becf",
  "#d62d85", "#8c6d31", "#7f7f7f", "#bcbd22", "#5a9bd5", "#ff7f0e"];

// ---- State: what the stream told us, bounded. -----------------------------

const state = {
  samples: [],      // oldest first, at most HISTORY_CAP
  removals: [],     // newest first, at most REMOVALS_CAP
  seenSeq: 0,       // the newest removal kept
  frame: null,      // the last frame, whole (it is replaced, never grown)
  reasons: [],      // reasons in first-seen order, for stable colours
};

/// Applies one stream event to `state`. Pure but for `state`; the browser
/// test calls it directly to check that many updates keep it bounded.
function apply(kind, data) {
  if (kind === "history") {
    state.samples = (data.samples || []).slice(-HISTORY_CAP);
    state.removals = [];
    state.seenSeq = 0;
    state.frame = null;
    addRemovals(data.removals || []);
  } else if (kind === "frame") {
    state.frame = data;
    const last = state.samples[state.samples.length - 1];
    // A second already in the history (a page that joined while the frame
    // was built) is not counted twice.
    if (data.sample && !(last && data.sample.t <= last.t)) {
      state.samples.push(data.sample);
      if (state.samples.length > HISTORY_CAP) {
        state.samples.splice(0, state.samples.length - HISTORY_CAP);
      }
    }
    addRemovals(data.removals || []);
  }
  for (const sample of state.samples.slice(-1)) {
    for (const reason of Object.keys(sample.evicted || {})) {
      if (!state.reasons.includes(reason)) state.reasons.push(reason);
    }
  }
  // The server names at most 24 reasons and `other`.
  if (state.reasons.length > 25) state.reasons.splice(0, state.reasons.length - 25);
}

function addRemovals(removals) {
  for (const removal of removals) {
    if (removal.seq <= state.seenSeq) continue;
    state.seenSeq = removal.seq;
    state.removals.unshift(removal);
  }
  if (state.removals.length > REMOVALS_CAP) state.removals.length = REMOVALS_CAP;
}

/// How much the page holds, for the bounded-state test.
function stateSizes() {
  return {
    samples: state.samples.length,
    removals: state.removals.length,
    reasons: state.reasons.length,
    rows: document.getElementById("session-rows").children.length,
    removalRows: document.getElementById("removals").children.length,
  };
}

window.vigil = { apply, stateSizes, state, HISTORY_CAP, REMOVALS_CAP };

// ---- Small helpers. --------------------------------------------------------

const $ = (id) => document.getElementById(id);

/// An element with attributes and children (text is always text, never HTML:
/// identities and reasons come from clients and plugins).
function el(tag, attrs, ...children) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== undefined && value !== null) node.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function replaceChildren(node, children) {
  node.replaceChildren(...children);
}

function colour(reason) {
  const index = state.reasons.indexOf(reason);
  return PALETTE[(index < 0 ? 0 : index) % PALETTE.length];
}

function formatTime(ms) {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

function formatMs(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.round(ms / 60000)} min`;
}

function shortSha(sha) {
  return sha ? sha.slice(0, 12) : "";
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/// 401 (no token) or 403 (a wrong one).
function refused(response) {
  return response.status === 401 || response.status === 403;
}

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    body,
    headers: { Authorization: `Bearer ${token()}` },
    cache: "no-store",
  });
  if (refused(response)) {
    signOut("The admin token was refused.");
    throw new Error("the admin token was refused");
  }
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
  if (!response.ok) {
    throw new Error((json && json.error) || text || `HTTP ${response.status}`);
  }
  return json;
}

// ---- Sign in and out. -------------------------------------------------------

function signIn(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
  $("login-error").hidden = true;
  startStream();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  stopStream();
  $("dashboard").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  setLink("signed out", "");
  if (message) {
    $("login-error").textContent = message;
    $("login-error").hidden = false;
  }
}

function showDashboard() {
  $("login").hidden = true;
  $("dashboard").hidden = false;
  $("logout").hidden = false;
}

function setLink(text, kind) {
  const link = $("link");
  link.textContent = text;
  link.className = `pill ${kind}`;
}

// ---- The stream: fetch-based server-sent events, reconnecting. -------------

let streamAbort = null;
let streamGeneration = 0;

function stopStream() {
  streamGeneration += 1;
  if (streamAbort) streamAbort.abort();
  streamAbort = null;
}

function startStream() {
  stopStream();
  const generation = streamGeneration;
  (async () => {
    let backoff = 500;
    while (generation === streamGeneration && token()) {
      const abort = new AbortController();
      streamAbort = abort;
      try {
        const response = await fetch("/admin/dashboard/stream", {
          headers: { Authorization: `Bearer ${token()}`, Accept: "text/event-stream" },
          signal: abort.signal,
          cache: "no-store",
        });
        if (refused(response)) {
          signOut("The admin token was refused.");
          return;
        }
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        showDashboard();
        setLink("live", "ok");
        backoff = 500;
        await readEvents(response.body, generation);
      } catch (_) {
        // Fall through to the reconnect.
      }
      if (generation !== streamGeneration) return;
      setLink("reconnecting…", "warn");
      await new Promise((resolve) => setTimeout(resolve, backoff));
      backoff = Math.min(backoff * 2, 5000);
    }
  })();
}

async function readEvents(body, generation) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done || generation !== streamGeneration) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let kind = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) kind = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length === 0) continue;
      try {
        apply(kind, JSON.parse(data.join("\n")));
      } catch (_) {
        continue;
      }
      scheduleRender();
    }
    // A server that never ends its events must not grow the buffer.
    if (buffer.length > 8 << 20) buffer = "";
  }
}

// ---- Rendering. -------------------------------------------------------------

let renderPending = false;
function scheduleRender() {
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(() => {
    renderPending = false;
    render();
  });
}

function windowSamples() {
  const seconds = Number($("window").value) || 900;
  const last = state.samples.length ? state.samples[state.samples.length - 1].t : Date.now();
  // A young host's history fills the chart rather than its right edge.
  const first = state.samples.length ? state.samples[0].t : last;
  const from = Math.max(last - seconds * 1000, Math.min(first, last - 60000));
  return { from, to: last, samples: state.samples.filter((s) => s.t >= from) };
}

function render() {
  const frame = state.frame;
  const { from, to, samples } = windowSamples();
  const latest = state.samples[state.samples.length - 1];
  $("sessions-now").textContent = latest ? String(latest.sessions) : "–";
  const minuteAgo = (latest ? latest.t : 0) - 60000;
  const evictedMinute = state.samples
    .filter((s) => s.t > minuteAgo)
    .reduce((sum, s) => sum + Object.values(s.evicted || {}).reduce((a, b) => a + b, 0), 0);
  $("evicted-minute").textContent = latest ? String(evictedMinute) : "–";
  $("calls-now").textContent = latest ? String(latest.calls) : "–";
  $("latency-now").textContent = latest && latest.call_us !== null ? `${latest.call_us.toFixed(1)} µs` : "–";
  $("alarm-pill").hidden = !(latest && latest.suspect);
  drawSessions(samples, from, to);
  drawEvictions(samples, from, to);
  drawCalls(samples, from, to);
  renderRemovals();
  if (!frame) return;
  renderPolicy(frame.policy, frame.shadow_report);
  renderBars($("tiers"), TIER_ORDER.map((tier) => [tier, frame.census.tiers[tier] || 0]),
    frame.census.sessions);
  renderBars($("classes"), Object.entries(frame.census.classes), frame.census.sessions);
  renderHealth(frame.census.health);
  renderBars($("faults"), Object.entries(frame.policy.faults), null);
  renderNodes(frame.nodes);
}

/// The chart's drawing width: its own width on screen, so text is never
/// stretched.
function chartWidth(svg, height) {
  const width = Math.max(200, Math.round(svg.clientWidth || 900));
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  return width;
}

function axisLabels(svg, max, width, height, from, to) {
  svg.append(
    el("svg:text", { x: 4, y: 12, class: "axis" }, String(max)),
    el("svg:text", { x: 4, y: height - 16, class: "axis" }, "0"),
    el("svg:text", { x: 4, y: height - 2, class: "axis" }, formatTime(from)),
    el("svg:text", { x: width - 4, y: height - 2, class: "axis end" }, formatTime(to)),
  );
}

function xOf(t, from, to, width) {
  return to > from ? ((t - from) / (to - from)) * width : width;
}

function drawSessions(samples, from, to) {
  const svg = $("chart-sessions");
  const height = 180, plot = height - 14;
  const width = chartWidth(svg, height);
  const max = Math.max(1, ...samples.map((s) => s.sessions));
  const children = [];
  // The alarm's spans, shaded.
  let start = null;
  for (const s of samples) {
    if (s.suspect && start === null) start = s.t;
    if (!s.suspect && start !== null) {
      children.push(alarmSpan(start, s.t, from, to, width, plot));
      start = null;
    }
  }
  if (start !== null) children.push(alarmSpan(start, to, from, to, width, plot));
  const points = samples
    .map((s) => `${xOf(s.t, from, to, width).toFixed(1)},${(plot - (s.sessions / max) * (plot - 16)).toFixed(1)}`)
    .join(" ");
  children.push(el("svg:polyline", { points, class: "line sessions" }));
  replaceChildren(svg, children);
  axisLabels(svg, max, width, height, from, to);
}

function alarmSpan(start, end, from, to, width, height) {
  const x = xOf(start, from, to, width);
  return el("svg:rect", { x, y: 0, width: Math.max(2, xOf(end, from, to, width) - x), height, class: "alarm-span" });
}

function drawEvictions(samples, from, to) {
  const svg = $("chart-evictions");
  const height = 160, plot = height - 14, buckets = 60;
  const width = chartWidth(svg, height);
  const span = Math.max(1, to - from);
  const bucketed = Array.from({ length: buckets }, () => ({}));
  for (const s of samples) {
    const index = Math.min(buckets - 1, Math.floor(((s.t - from) / span) * buckets));
    if (index < 0) continue;
    for (const [reason, count] of Object.entries(s.evicted || {})) {
      bucketed[index][reason] = (bucketed[index][reason] || 0) + count;
    }
  }
  const totals = bucketed.map((b) => Object.values(b).reduce((a, c) => a + c, 0));
  const max = Math.max(1, ...totals);
  const barWidth = width / buckets;
  const children = [];
  bucketed.forEach((bucket, index) => {
    let y = plot;
    for (const reason of state.reasons) {
      const count = bucket[reason];
      if (!count) continue;
      const h = (count / max) * (plot - 16);
      y -= h;
      children.push(el("svg:rect", {
        x: index * barWidth + 1, y, width: barWidth - 2, height: h, fill: colour(reason),
      }, el("svg:title", {}, `${reason}: ${count}`)));
    }
  });
  replaceChildren(svg, children);
  axisLabels(svg, max, width, height, from, to);
  replaceChildren($("eviction-legend"), state.reasons.map((reason) =>
    el("span", { class: "legend-item" }, swatch(colour(reason)), reason)));
}

function swatch(fill) {
  const node = el("span", { class: "swatch" });
  node.style.background = fill;
  return node;
}

function drawCalls(samples, from, to) {
  const svg = $("chart-calls");
  const height = 140, plot = height - 14;
  const width = chartWidth(svg, height);
  const maxCalls = Math.max(1, ...samples.map((s) => s.calls));
  const maxLatency = Math.max(1, ...samples.map((s) => s.call_us || 0));
  const line = (value, max) => samples
    .filter((s) => value(s) !== null && value(s) !== undefined)
    .map((s) => `${xOf(s.t, from, to, width).toFixed(1)},${(plot - (value(s) / max) * (plot - 16)).toFixed(1)}`)
    .join(" ");
  replaceChildren(svg, [
    el("svg:polyline", { points: line((s) => s.calls, maxCalls), class: "line calls" }),
    el("svg:polyline", { points: line((s) => s.call_us, maxLatency), class: "line latency" }),
  ]);
  svg.append(
    el("svg:text", { x: 4, y: 12, class: "axis" }, `${maxCalls} calls/s`),
    el("svg:text", { x: width - 4, y: 12, class: "axis end" }, `${maxLatency.toFixed(0)} µs`),
    el("svg:text", { x: 4, y: height - 2, class: "axis" }, formatTime(from)),
    el("svg:text", { x: width - 4, y: height - 2, class: "axis end" }, formatTime(to)),
  );
}

function renderBars(container, entries, total) {
  const max = Math.max(1, total || 0, ...entries.map(([, n]) => n));
  replaceChildren(container, entries.map(([name, count]) => {
    const fill = el("span", { class: "fill" });
    fill.style.width = `${(count / max) * 100}%`;
    return el("div", { class: "bar", "data-name": name },
      el("span", { class: "name" }, name), el("span", { class: "track" }, fill),
      el("span", { class: "count" }, String(count)));
  }));
}

function renderHealth(health) {
  const max = Math.max(1, ...health);
  replaceChildren($("health"), health.map((count, index) => {
    const column = el("span", { class: "column" });
    column.style.height = `${(count / max) * 100}%`;
    const label = index === health.length - 1 ? "90–100" : `${index * 10}–${index * 10 + 9}`;
    return el("div", { class: "bucket", title: `health ${label}: ${count}` },
      el("span", { class: "count" }, String(count)), el("span", { class: "bin" }, column),
      el("span", { class: "name" }, String(index * 10)));
  }));
}

function renderPolicy(policy, report) {
  const overview = policy.overview;
  const fallback = overview && overview.active.fallback_in_use;
  const stateText = policy.state === "disabled" ? "disabled" : fallback ? "fallback" : "active";
  $("policy-state").textContent = stateText;
  const pill = $("policy-pill");
  pill.textContent = `policy ${stateText}`;
  pill.className = `pill ${stateText === "active" ? "ok" : "warn"}`;
  const faults = Object.values(policy.faults).reduce((a, b) => a + b, 0);
  $("faults-now").textContent = String(faults);
  const show = (slot, plugin) => {
    $(`policy-${slot}-name`).textContent = plugin ? plugin.name : "none";
    $(`policy-${slot}-sha`).textContent = plugin ? plugin.sha256 : "";
    $(`policy-${slot}-sha`).title = plugin ? plugin.sha256 : "";
  };
  show("active", overview && overview.active);
  show("previous", overview && overview.previous);
  show("shadow", overview && overview.shadow);
  $("promote").disabled = !(overview && overview.shadow);
  $("shadow-stop").disabled = !(overview && overview.shadow);
  $("rollback").disabled = !(overview && overview.previous);
  if (!report) {
    $("shadow-summary").textContent = "No shadow policy is running.";
    replaceChildren($("shadow-samples"), []);
    return;
  }
  $("shadow-summary").textContent =
    `${report.name} (${shortSha(report.sha256)}): ${report.disagreements} disagreements in ` +
    `${report.sessions_compared} sessions over ${report.batches} batches; ` +
    `${report.faulted_batches} faulted batches; health threshold ${report.health_threshold}.`;
  replaceChildren($("shadow-samples"), (report.samples || []).slice(-10).reverse().map((sample) =>
    el("tr", {}, el("td", {}, String(sample.session)),
      el("td", {}, (sample.differences || []).join(", ")),
      el("td", {}, verdictText(sample.active)), el("td", {}, verdictText(sample.shadow)))));
}

function verdictText(verdict) {
  if (!verdict) return "";
  const action = typeof verdict.action === "string" ? verdict.action : JSON.stringify(verdict.action);
  return `health ${verdict.health}, ${verdict.tier}, ${action}`;
}

function renderRemovals() {
  replaceChildren($("removals"), state.removals.map((r) =>
    el("tr", { "data-session": r.session, "data-reason": r.reason },
      el("td", {}, formatTime(r.at)), el("td", {}, String(r.session)), el("td", {}, r.identity || ""),
      el("td", {}, r.peer), el("td", {}, swatch(colour(r.reason)), r.reason), el("td", {}, r.tier),
      el("td", {}, r.code === null || r.code === undefined ? "none (client)" : String(r.code)))));
}

function renderNodes(nodes) {
  $("nodes-card").hidden = !nodes;
  if (!nodes) return;
  replaceChildren($("nodes"), nodes.map((node) =>
    el("tr", {}, el("td", {}, node.node), el("td", {}, String(node.sessions)))));
}

// ---- The session table: paged and searched on the server. -----------------

const table = { cursors: [0], page: 0, selected: null, timer: null, loading: false };

async function loadTable() {
  if (!token() || $("dashboard").hidden || table.loading) return;
  table.loading = true;
  try {
    const query = new URLSearchParams({
      limit: String(PAGE_ROWS),
      after: String(table.cursors[table.page] || 0),
    });
    const search = $("search").value.trim();
    if (search) query.set("search", search);
    if ($("tier-filter").value) query.set("tier", $("tier-filter").value);
    const page = await api("GET", `/admin/dashboard/sessions?${query}`);
    const rows = page.sessions.map((s) => {
      const row = el("tr", { "data-session": s.id },
        el("td", {}, String(s.id)), el("td", {}, s.identity || ""), el("td", {}, s.class),
        el("td", {}, s.peer), el("td", {}, s.tier), el("td", {}, String(s.health)),
        el("td", {}, s.rtt_ms === null ? "–" : `${s.rtt_ms} ms`), el("td", {}, String(s.queued_bytes)),
        el("td", {}, formatMs(s.last_seen_ms)));
      row.addEventListener("click", () => showDetails(s.id));
      return row;
    });
    replaceChildren($("session-rows"), rows);
    const first = table.page * PAGE_ROWS + (rows.length ? 1 : 0);
    $("table-count").textContent =
      `${first}–${table.page * PAGE_ROWS + rows.length} of ${page.count}`;
    table.cursors[table.page + 1] = page.sessions.length
      ? page.sessions[page.sessions.length - 1].id : table.cursors[table.page];
    $("next").disabled = (table.page + 1) * PAGE_ROWS >= page.count;
    $("prev").disabled = table.page === 0;
    if (table.selected !== null) await showDetails(table.selected, true);
  } catch (_) {
    // The stream shows the link's state; the table tries again.
  } finally {
    table.loading = false;
  }
}

function resetTable() {
  table.cursors = [0];
  table.page = 0;
  loadTable();
}

async function showDetails(id, refresh) {
  table.selected = id;
  let session;
  try {
    session = await api("GET", `/admin/sessions/${id}`);
  } catch (error) {
    if (!refresh) return;
    $("details-title").textContent = `Session ${id}: gone`;
    replaceChildren($("details-facts"), []);
    $("evict").disabled = true;
    return;
  }
  $("details").hidden = false;
  $("evict").disabled = false;
  $("details-title").textContent = `Session ${id}`;
  const facts = [];
  for (const [name, value] of Object.entries(session)) {
    if (name === "tcp" && value) {
      for (const [tcpName, tcpValue] of Object.entries(value)) {
        facts.push([`tcp.${tcpName}`, tcpValue]);
      }
    } else {
      facts.push([name, value]);
    }
  }
  replaceChildren($("details-facts"), facts.map(([name, value]) =>
    el("tr", {}, el("th", {}, name), el("td", {}, value === null ? "–" : String(value)))));
}

// ---- Confirmed actions. -----------------------------------------------------

function confirmAction(text) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  return new Promise((resolve) => {
    const done = (answer) => {
      $("confirm-yes").onclick = null;
      $("confirm-no").onclick = null;
      dialog.close();
      resolve(answer);
    };
    $("confirm-yes").onclick = () => done(true);
    $("confirm-no").onclick = () => done(false);
    dialog.showModal();
  });
}

async function act(question, method, path, body, describe) {
  if (!(await confirmAction(question))) return;
  const result = $("action-result");
  result.className = "note";
  result.textContent = "working…";
  try {
    const answer = await api(method, path, body);
    result.textContent = describe(answer || {});
  } catch (error) {
    result.className = "note error";
    result.textContent = error.message;
  }
}

function chosenFile(input) {
  const file = $(input).files[0];
  if (!file) {
    $("action-result").className = "note error";
    $("action-result").textContent = "Choose a .wasm file first.";
  }
  return file;
}

function wire() {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    $("token").value = "";
    if (value) signIn(value);
  });
  $("logout").addEventListener("click", () => signOut(null));
  $("window").addEventListener("change", scheduleRender);
  let searchTimer = null;
  $("search").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(resetTable, 250);
  });
  $("tier-filter").addEventListener("change", resetTable);
  $("next").addEventListener("click", () => { table.page += 1; loadTable(); });
  $("prev").addEventListener("click", () => { table.page = Math.max(0, table.page - 1); loadTable(); });
  $("details-close").addEventListener("click", () => { table.selected = null; $("details").hidden = true; });
  $("evict").addEventListener("click", async () => {
    const id = table.selected;
    if (id === null) return;
    await act(`Evict session ${id}?`, "DELETE", `/admin/sessions/${id}`, undefined,
      () => `Session ${id} evicted.`);
    loadTable();
  });
  $("swap").addEventListener("click", () => {
    const file = chosenFile("swap-file");
    if (!file) return;
    act(`Swap the active policy to ${file.name}?`, "PUT",
      `/admin/policy?name=${encodeURIComponent(file.name)}`, file,
      (answer) => `Active: ${answer.name} (${shortSha(answer.sha256)}), swapped in ${Number(answer.swap_ms).toFixed(1)} ms.`);
  });
  $("rollback").addEventListener("click", () =>
    act("Roll back to the previous policy?", "POST", "/admin/policy/rollback", undefined,
      () => "Rolled back."));
  $("shadow-start").addEventListener("click", () => {
    const file = chosenFile("shadow-file");
    if (!file) return;
    act(`Run ${file.name} in shadow?`, "PUT",
      `/admin/policy/shadow?name=${encodeURIComponent(file.name)}`, file,
      (answer) => `Shadow: ${answer.name} (${shortSha(answer.sha256)}).`);
  });
  $("shadow-stop").addEventListener("click", () =>
    act("Stop the shadow policy?", "DELETE", "/admin/policy/shadow", undefined, () => "Shadow stopped."));
  $("promote").addEventListener("click", () =>
    act("Promote the shadow policy to active?", "POST", "/admin/policy/shadow/promote", undefined,
      () => "Shadow promoted."));
  table.timer = setInterval(loadTable, 2000);
  if (token()) startStream();
}

// While the stream lives the table keeps up; opening the dashboard loads it.
const observer = new MutationObserver(() => { if (!$("dashboard").hidden) loadTable(); });

document.addEventListener("DOMContentLoaded", () => {
  observer.observe($("dashboard"), { attributes: true, attributeFilter: ["hidden"] });
  wire();
});
