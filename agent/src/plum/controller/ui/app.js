// The controller's status page: reads the API with the operator token (an Authorization header, never a
// URL) and follows GET /v1/stream with fetch() and a ReadableStream, since EventSource cannot send headers.
"use strict";

const TOKEN_KEY = "plum.operatorToken"; // sessionStorage: gone when the tab closes
const HEALTH_POLL_MS = 10000; // a node that goes silent sends no event: look again now and then
const MAX_EVENTS = 200;
const RETRY_MAX_MS = 15000;

class AuthError extends Error {}

const state = { token: "", previous: null, stream: null, refreshTimer: 0, pollTimer: 0, retryMs: 1000 };
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

function badge(text, kind) {
  return el("span", { class: `badge ${kind}` }, text);
}

async function api(path, { raw = false, signal } = {}) {
  const response = await fetch(path, {
    signal,
    cache: "no-store",
    credentials: "omit",
    headers: { Authorization: `Bearer ${state.token}` },
  });
  if (response.status === 401 || response.status === 403) {
    let detail = "";
    try {
      detail = (await response.json()).error || "";
    } catch (_) {
      /* no JSON body */
    }
    throw new AuthError(`The controller refused this token (${response.status}${detail ? ": " + detail : ""}).`);
  }
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return raw ? response : response.json();
}

async function snapshot() {
  const [nodes, deployments] = await Promise.all([api("/v1/nodes"), api("/v1/deployments")]);
  const details = await Promise.all(
    deployments.map((d) => api(`/v1/deployments/${encodeURIComponent(d.deploymentId)}`).catch(() => null)),
  );
  deployments.forEach((d, i) => {
    d.assignments = details[i] ? details[i].assignments : [];
  });
  return { nodes, deployments };
}

function addEvent(text, kind = "") {
  const list = $("events");
  const empty = list.querySelector(".empty");
  if (empty) empty.remove();
  const time = new Date().toLocaleTimeString();
  list.prepend(el("li", { class: kind }, el("time", {}, time), text));
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

function instancesById(snap) {
  const out = new Map();
  for (const d of snap.deployments) for (const a of d.assignments) out.set(a.instanceId, { ...a, name: d.name });
  return out;
}

// What changed since the last look: crashes and restarts, phase changes, placements, failovers, node health.
function diff(before, after) {
  const oldNodes = new Map(before.nodes.map((n) => [n.nodeId, n]));
  for (const n of after.nodes) {
    const old = oldNodes.get(n.nodeId);
    if (!old) addEvent(`node ${n.nodeId} joined (${n.health})`);
    else if (old.health !== n.health) addEvent(`node ${n.nodeId}: ${old.health} → ${n.health}`, n.health === "Healthy" ? "" : "bad");
  }
  const oldInst = instancesById(before);
  const newInst = instancesById(after);
  for (const [id, a] of newInst) {
    const old = oldInst.get(id);
    const where = `${a.name} ${id} on ${a.nodeId}`;
    if (!old) {
      addEvent(`${where}: placed`);
      continue;
    }
    if (old.nodeId !== a.nodeId) addEvent(`${a.name} ${id}: moved ${old.nodeId} → ${a.nodeId} (failover)`, "bad");
    if ((a.restarts || 0) > (old.restarts || 0)) addEvent(`${where}: restarted (${a.restarts} restarts)`, "bad");
    if (old.phase !== a.phase) {
      const why = a.message ? ` (${a.message})` : "";
      addEvent(`${where}: ${old.phase || "no report"} → ${a.phase || "no report"}${why}`);
    }
  }
  for (const [id, a] of oldInst) {
    if (!newInst.has(id)) addEvent(`${a.name} ${id} on ${a.nodeId}: removed or failed over`);
  }
}

function render(snap) {
  const perNode = new Map();
  for (const d of snap.deployments) for (const a of d.assignments) perNode.set(a.nodeId, (perNode.get(a.nodeId) || 0) + 1);
  const nodeRows = snap.nodes.map((n) =>
    el(
      "tr",
      { "data-node": n.nodeId },
      el("td", {}, n.nodeId),
      el("td", {}, badge(n.health, `health-${n.health}`)),
      el("td", {}, n.ip),
      el("td", {}, n.lastSeen ? new Date(n.lastSeen * 1000).toLocaleTimeString() : "never"),
      el("td", {}, perNode.get(n.nodeId) || 0),
    ),
  );
  $("nodes").tBodies[0].replaceChildren(...(nodeRows.length ? nodeRows : [el("tr", {}, el("td", { class: "empty", colspan: "5" }, "no nodes yet"))]));

  const blocks = snap.deployments.map((d) => {
    const rollout = d.rollout ? ` · rollout ${d.rollout.state || d.rollout.status || ""}` : "";
    const rows = d.assignments.map((a) =>
      el(
        "tr",
        { "data-instance": a.instanceId },
        el("td", {}, a.instanceId),
        el("td", {}, a.nodeId),
        el("td", {}, a.desired),
        el("td", { class: "phase" }, badge(a.phase || "no report", `phase-${a.phase || "none"}`)),
        el("td", { class: "restarts" }, a.restarts ?? 0),
        el("td", { class: "message" }, a.message || ""),
      ),
    );
    return el(
      "section",
      { class: "deployment", "data-deployment": d.deploymentId },
      el("h3", {}, `${d.name} `, badge(d.status, d.status === "Running" ? "ok" : ""), el("span", { class: "message" }, ` ${d.deploymentId}${rollout}`)),
      el(
        "table",
        {},
        el("thead", {}, el("tr", {}, ...["Instance", "Node", "Desired", "Phase", "Restarts", "Reason"].map((h) => el("th", {}, h)))),
        el("tbody", {}, ...(rows.length ? rows : [el("tr", {}, el("td", { class: "empty", colspan: "6" }, "no instances"))])),
      ),
    );
  });
  $("deployments").replaceChildren(...(blocks.length ? blocks : [el("p", { class: "empty" }, "no deployments yet")]));
}

async function refresh() {
  try {
    const snap = await snapshot();
    if (state.previous) diff(state.previous, snap);
    state.previous = snap;
    render(snap);
  } catch (err) {
    if (err instanceof AuthError) return signOut(err.message);
    setConnection(`refresh failed: ${err.message}`, "warn");
  }
}

function scheduleRefresh() {
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(refresh, 150); // a burst of updates makes one refresh
}

function setConnection(text, kind) {
  const badgeEl = $("connection");
  badgeEl.textContent = text;
  badgeEl.className = `badge ${kind}`;
}

function handleFrame(frame) {
  let kind = "message";
  const data = [];
  for (const line of frame.split("\n")) {
    if (line.startsWith("event:")) kind = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).trim());
  }
  if (frame.startsWith(":")) return; // keepalive comment
  if (kind === "update") scheduleRefresh();
  else if (kind === "rollout") {
    try {
      const ev = JSON.parse(data.join("\n"));
      const r = ev.rollout || {};
      const known = state.previous && state.previous.deployments.find((d) => d.deploymentId === ev.deploymentId);
      const why = r.message ? ` (${r.message})` : "";
      addEvent(`rollout ${ev.event} of ${known ? known.name : ev.deploymentId}${why}`, "rollout");
    } catch (_) {
      addEvent(`rollout: ${data.join(" ")}`, "rollout");
    }
    scheduleRefresh();
  }
}

async function follow() {
  const controller = new AbortController();
  state.stream = controller;
  try {
    const response = await api("/v1/stream", { raw: true, signal: controller.signal });
    setConnection("live", "ok");
    state.retryMs = 1000;
    scheduleRefresh(); // whatever changed while the stream was down
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        handleFrame(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
    throw new Error("stream closed");
  } catch (err) {
    if (controller.signal.aborted) return;
    if (err instanceof AuthError) return signOut(err.message);
    setConnection(`reconnecting (${err.message})`, "warn");
    setTimeout(() => state.stream === controller && follow(), state.retryMs);
    state.retryMs = Math.min(state.retryMs * 2, RETRY_MAX_MS);
  }
}

async function connect(token) {
  state.token = token;
  state.previous = null;
  $("error").hidden = true;
  try {
    state.previous = await snapshot();
  } catch (err) {
    return signOut(err instanceof AuthError ? err.message : `Cannot reach the controller: ${err.message}`);
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  render(state.previous);
  $("events").replaceChildren(el("li", { class: "empty" }, "nothing yet: changes appear here as they happen"));
  $("login").hidden = true;
  $("status").hidden = false;
  $("forget").hidden = false;
  clearInterval(state.pollTimer);
  state.pollTimer = setInterval(refresh, HEALTH_POLL_MS);
  follow();
}

function signOut(message) {
  if (state.stream) state.stream.abort();
  state.stream = null;
  clearInterval(state.pollTimer);
  state.token = "";
  sessionStorage.removeItem(TOKEN_KEY);
  $("status").hidden = true;
  $("forget").hidden = true;
  $("login").hidden = false;
  setConnection("not connected", "off");
  const error = $("error");
  error.textContent = message || "";
  error.hidden = !message;
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("token");
    const token = input.value.trim();
    input.value = "";
    if (token) connect(token);
  });
  $("forget").addEventListener("click", () => signOut(""));
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) connect(saved);
});
