// The status page's script: polls GET /status, draws the tables and charts, ends a session
// with DELETE /sessions/ID. Everything a client sent (names, paths, commands) goes into the
// page as text, never as markup.
"use strict";

const TOKEN_KEY = "ferryd-admin-token";
const POLL_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
let token = sessionStorage.getItem(TOKEN_KEY) || "";

function $(id) { return document.getElementById(id); }

function auth() { return token ? { Authorization: "Bearer " + token } : {}; }

// An element with `text` as its text.
function cell(tag, text, className) {
  const node = document.createElement(tag);
  node.textContent = text === undefined || text === null ? "" : String(text);
  if (className) node.className = className;
  return node;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit + 1 < units.length) { value /= 1024; unit += 1; }
  return (unit === 0 ? value.toFixed(0) : value.toFixed(1)) + " " + units[unit];
}

// A time of day in the browser's zone; the exact time as the cell's title.
function clock(tag, iso, className) {
  const node = cell(tag, "", className);
  const at = new Date(iso);
  node.textContent = isNaN(at) ? String(iso) : at.toLocaleTimeString();
  node.title = iso;
  return node;
}

function problem(text) { $("problem").textContent = text; }

function askToken(why) {
  $("login").hidden = false;
  problem(why);
  $("token").focus();
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  $("login").hidden = true;
  problem("");
  refresh();
});

async function refresh() {
  let answer;
  try {
    answer = await fetch("/status", { headers: auth(), cache: "no-store" });
  } catch (e) {
    problem("ferryd does not answer: " + e.message);
    return;
  }
  if (answer.status === 401) {
    askToken(token ? "That token was refused." : "This server needs its admin token.");
    return;
  }
  if (!answer.ok) {
    problem("ferryd answered " + answer.status);
    return;
  }
  const status = await answer.json();
  problem("");
  render(status);
}

function render(status) {
  $("node").textContent = status.node + " " + status.version;
  $("state").textContent = "updated " + new Date().toLocaleTimeString() + ", " +
    status.sessions.length + " session(s) open";
  renderSessions(status.sessions);
  renderEvents(status.events);
  renderCharts(status.history);
}

function renderSessions(sessions) {
  const body = $("sessions");
  body.replaceChildren();
  if (sessions.length === 0) {
    const row = body.insertRow();
    const empty = cell("td", "no sessions", "empty");
    empty.colSpan = 8;
    row.append(empty);
    return;
  }
  for (const s of sessions) {
    const row = body.insertRow();
    row.dataset.session = s.id;
    let transfer = "";
    if (s.transfer) {
      const t = s.transfer;
      transfer = t.kind + " " + (t.path || "") + ": " + bytes(t.bytes) + " at " + bytes(t.rate) + "/s";
      row.dataset.transfer = t.kind;
    }
    const end = document.createElement("button");
    end.type = "button";
    end.textContent = "End";
    end.title = "End this session (426 for its transfer, then 421)";
    end.dataset.kick = s.id;
    end.addEventListener("click", () => kick(s.id, end));
    const action = document.createElement("td");
    action.append(end);
    row.append(
      cell("td", s.id, "num"), cell("td", s.user || "—", "text"), cell("td", s.peer),
      cell("td", s.node), clock("td", s.since), cell("td", s.command || "", "text"),
      cell("td", transfer, "text transfer"), action);
  }
}

async function kick(id, button) {
  button.disabled = true;
  let answer;
  try {
    answer = await fetch("/sessions/" + encodeURIComponent(id), { method: "DELETE", headers: auth() });
  } catch (e) {
    problem("could not end session " + id + ": " + e.message);
    button.disabled = false;
    return;
  }
  if (answer.ok) {
    $("notice").textContent = "Session " + id + " ended.";
  } else if (answer.status === 404) {
    $("notice").textContent = "Session " + id + " had already ended.";
  } else if (answer.status === 401) {
    askToken("That token was refused.");
  } else {
    problem("ending session " + id + ": ferryd answered " + answer.status);
  }
  refresh();
}

function renderEvents(events) {
  const body = $("events");
  body.replaceChildren();
  for (const e of events.slice().reverse()) {
    const row = body.insertRow();
    const what = [e.command, e.path, e.target].filter(Boolean).join(" ");
    row.append(
      clock("td", e.time), cell("td", e.session, "num"), cell("td", e.user || "", "text"),
      cell("td", e.event), cell("td", what, "text"), cell("td", e.code || ""),
      cell("td", e.bytes === undefined ? "" : bytes(e.bytes), "num"));
  }
}

// Per-second rates of a cumulative counter between consecutive samples.
function rates(history, field) {
  const out = [];
  for (let i = 1; i < history.length; i++) {
    const seconds = (history[i].at_ms - history[i - 1].at_ms) / 1000;
    const moved = history[i][field] - history[i - 1][field];
    out.push(seconds > 0 ? Math.max(0, moved / seconds) : 0);
  }
  return out;
}

// Draws each of `lines` ([values, class]) into `svg`, scaled to the largest value.
function draw(svg, lines, label) {
  const width = 420;
  const height = 110;
  const top = 14;
  svg.replaceChildren();
  const most = Math.max(1, ...lines.flatMap(([values]) => values));
  for (const [values, className] of lines) {
    if (values.length === 0) continue;
    const step = width / Math.max(1, values.length - 1);
    const points = values.map((v, i) =>
      (i * step).toFixed(1) + "," + (height - (v / most) * (height - top)).toFixed(1));
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", points.join(" "));
    line.setAttribute("class", className);
    svg.append(line);
  }
  const scale = document.createElementNS(SVG, "text");
  scale.setAttribute("x", "4");
  scale.setAttribute("y", "11");
  scale.textContent = "max " + label(most);
  svg.append(scale);
}

function renderCharts(history) {
  const up = rates(history, "bytes_in");
  const down = rates(history, "bytes_out");
  draw($("throughput"), [[up, "in"], [down, "out"]], (v) => bytes(v) + "/s");
  $("throughput-now").textContent = "now " + bytes(up.at(-1) || 0) + "/s up, " +
    bytes(down.at(-1) || 0) + "/s down";
  const sessions = history.map((s) => s.sessions);
  const transfers = history.map((s) => s.transfers);
  draw($("load"), [[sessions, "sessions"], [transfers, "transfers"]], (v) => String(v));
  const last = history.at(-1) || { sessions: 0, transfers: 0 };
  $("load-now").textContent = "now " + last.sessions + " sessions, " + last.transfers + " transfers";
}

refresh();
setInterval(refresh, POLL_MS);
