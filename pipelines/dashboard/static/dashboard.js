// tradeloom operator dashboard: polls /api/state and renders it; controls POST JSON to /api/controls/*.
// Everything from the server is written with textContent (never innerHTML): journal text is data, not markup.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
let refreshMs = 2000;
let timer = null;

function money(value) {
  if (value === null || value === undefined) return "–";
  return Number(value).toLocaleString("en-US", {minimumFractionDigits: 2, maximumFractionDigits: 2});
}
function pct(value) {
  if (value === null || value === undefined) return "–";
  return (Number(value) * 100).toFixed(2) + "%";
}
function seconds(value) {
  if (value === null || value === undefined) return "–";
  const s = Math.abs(value);
  if (s < 120) return value.toFixed(1) + " s";
  if (s < 7200) return (value / 60).toFixed(1) + " min";
  if (s < 172800) return (value / 3600).toFixed(1) + " h";
  return (value / 86400).toFixed(1) + " d";
}
function shortTime(iso) {
  return iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("+00:00", "Z") : "–";
}
function setValue(id, text, raw, sign) {
  const el = $(id);
  el.textContent = text;
  if (raw !== undefined) el.dataset.value = raw === null ? "" : String(raw);
  el.classList.toggle("up", sign === true || (sign === undefined && raw > 0));
  el.classList.toggle("down", sign === false || (sign === undefined && raw < 0));
}
function fillTable(id, rows, cells, rowData) {
  const body = $(id).querySelector("tbody");
  body.replaceChildren();
  for (const row of rows) {
    const tr = document.createElement("tr");
    if (rowData) Object.assign(tr.dataset, rowData(row));
    for (const cell of cells(row)) {
      const td = document.createElement("td");
      if (cell instanceof Node) td.appendChild(cell); else td.textContent = cell === null ? "" : String(cell);
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = $(id).querySelectorAll("th").length;
    td.className = "muted";
    td.textContent = "none";
    tr.appendChild(td);
    body.appendChild(tr);
  }
}
function bar(share) {
  const span = document.createElement("span");
  span.className = "bar";
  const inner = document.createElement("span");
  inner.style.width = Math.min(100, Math.abs(share) * 100).toFixed(1) + "%";
  span.appendChild(inner);
  const label = document.createElement("span");
  label.textContent = " " + pct(share);
  const wrap = document.createElement("span");
  wrap.append(span, label);
  return wrap;
}

function renderChart(points) {
  const svg = $("equity-chart");
  svg.replaceChildren();
  if (points.length < 2) return;
  const W = 900, top = 10, eqH = 150, ddTop = 175, ddH = 55;
  const eq = points.map((p) => p.equity), dd = points.map((p) => p.drawdown);
  const lo = Math.min(...eq), hi = Math.max(...eq), span = hi - lo || 1;
  const ddLo = Math.min(...dd, -1e-9);
  const x = (i) => (i / (points.length - 1)) * (W - 70) + 60;
  const line = (values, y) => values.map((v, i) => (i ? "L" : "M") + x(i).toFixed(1) + "," + y(v).toFixed(1)).join("");
  const yEq = (v) => top + eqH - ((v - lo) / span) * eqH;
  const yDd = (v) => ddTop + (v / ddLo) * ddH;
  const add = (name, attrs, text) => {
    const el = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (text) el.textContent = text;
    svg.appendChild(el);
    return el;
  };
  add("path", {d: line(eq, yEq), class: "equity-line", fill: "none"});
  add("path", {d: line(dd, yDd) + `L${x(dd.length - 1)},${ddTop}L${x(0)},${ddTop}Z`, class: "drawdown-area"});
  add("text", {x: 2, y: top + 10, class: "axis"}, money(hi));
  add("text", {x: 2, y: top + eqH, class: "axis"}, money(lo));
  add("text", {x: 2, y: ddTop + 10, class: "axis"}, "DD 0%");
  add("text", {x: 2, y: ddTop + ddH, class: "axis"}, pct(ddLo));
  add("text", {x: 60, y: 238, class: "axis"}, shortTime(points[0].at));
  add("text", {x: W - 10, y: 238, class: "axis", "text-anchor": "end"}, shortTime(points[points.length - 1].at));
}

function render(state) {
  const {target, positions, equity, signals, orders, status} = state;
  $("target").textContent = `${target.strategy} · ${target.mode}`;
  const kill = status.kill_switch.engaged;
  $("kill-state").textContent = kill ? "KILL SWITCH ENGAGED" : "kill switch: off";
  $("kill-state").className = "pill " + (kill ? "alarm" : "ok");
  $("kill-state").dataset.engaged = String(kill);
  $("kill-state").title = status.kill_switch.note || status.kill_switch.file;
  const paused = status.pause_entries.engaged;
  $("pause-state").textContent = paused ? "entries PAUSED" : "entries: allowed";
  $("pause-state").className = "pill " + (paused ? "warn" : "ok");
  $("pause-state").dataset.engaged = String(paused);
  $("feed-lag").textContent = "feed lag: " + seconds(status.feed_lag_seconds);
  $("feed-lag").title = "last bar " + shortTime(status.last_bar_at);
  $("feed-lag").className = "pill " + (target.mode === "replay" ? "muted" :
    (status.feed_lag_seconds !== null && status.feed_lag_seconds < 120 ? "ok" : "warn"));
  $("journal-lag").textContent = "journal: " + seconds(status.journal_lag_seconds) + " ago";

  setValue("equity", money(equity.equity ?? positions.equity), equity.equity ?? positions.equity, null);
  setValue("pnl", money(equity.pnl), equity.pnl);
  $("pnl-pct").textContent = pct(equity.pnl_pct) + " since " + money(equity.start_equity);
  setValue("drawdown", pct(equity.drawdown), equity.drawdown, equity.drawdown < 0 ? false : null);
  $("max-drawdown").textContent = "max " + pct(equity.max_drawdown);
  setValue("gross-exposure", money(positions.gross_exposure), positions.gross_exposure, null);
  $("net-exposure").textContent = "net " + money(positions.net_exposure);
  setValue("cash", money(positions.cash), positions.cash, null);
  $("as-of").textContent = "as of " + shortTime(positions.as_of);
  $("equity-day").textContent = equity.day ? `· session ${equity.day} · ${equity.points.length} bars` : "";
  renderChart(equity.points);

  fillTable("positions", positions.positions, (p) => [
    p.instrument, p.quantity, p.average_price === null ? "" : money(p.average_price), money(p.mark),
    money(p.market_value), bar(p.exposure_share), money(p.unrealized_pnl), money(p.realized_pnl), money(p.fees),
  ], (p) => ({instrument: p.instrument, quantity: String(p.quantity), realized: String(p.realized_pnl),
    unrealized: String(p.unrealized_pnl)}));

  $("signals-bar").textContent = signals.bar_at ? "· bar " + shortTime(signals.bar_at) : "";
  $("signals-model").textContent = signals.model ?
    `model ${signals.model} · version ${signals.model_version} · feature snapshot ${signals.feature_snapshot_hash}` : "";
  const arrow = (s) => (s > 0 ? "▲ long" : s < 0 ? "▼ short" : "· flat");
  fillTable("signals", signals.instruments, (s) => [
    s.instrument, arrow(s.signal),
    s.target_weight !== null && s.target_weight !== undefined ? "target " + pct(s.target_weight)
      : s.confidence === null ? "" : Number(s.confidence).toFixed(3), s.proposed,
    s.entry, s.exit, s.probabilities ? s.probabilities.map((p) => p.toFixed(2)).join(" / ") : "",
  ], (s) => ({instrument: s.instrument, signal: String(s.signal)}));
  fillTable("rules", signals.rules, (r) => [shortTime(r.bar_at), r.instrument, r.rule, r.action, r.reason],
    (r) => ({rule: r.rule}));

  $("orders-by-state").textContent = "· " + Object.entries(orders.by_state).map(([k, v]) => `${k} ${v}`).join(", ");
  const lineage = (o) => `${o.model_name || ""} ${o.model_version || ""}`.trim();
  fillTable("open-orders", orders.open, (o) => [
    o.client_order_id, o.instrument_key, o.side, o.quantity, o.filled_quantity, o.order_type, o.purpose, o.state,
    o.stop_price !== null ? money(o.stop_price) : o.limit_price !== null ? money(o.limit_price) : "",
    lineage(o), o.feature_snapshot_hash,
  ], (o) => ({clientOrderId: o.client_order_id, state: o.state}));
  fillTable("recent-orders", orders.recent, (o) => [
    shortTime(o.bar_at), o.client_order_id, o.instrument_key, o.side, o.quantity, o.filled_quantity, o.order_type,
    o.purpose, o.state, o.average_price === null ? "" : money(o.average_price), lineage(o),
    o.feature_snapshot_hash,
  ], (o) => ({clientOrderId: o.client_order_id, state: o.state, purpose: o.purpose}));
  fillTable("events", status.events, (e) => [shortTime(e.event_at), e.kind, e.actor, JSON.stringify(e.detail)],
    (e) => ({kind: e.kind, actor: e.actor}));
  $("footer").textContent = "updated " + shortTime(status.now) + " · refresh every " + refreshMs / 1000 + " s";
  document.body.dataset.loaded = "true";
}

async function refresh() {
  try {
    const response = await fetch("/api/state", {credentials: "same-origin"});
    if (response.status === 401) {
      $("footer").textContent = "log in to see the dashboard";
    } else if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      $("footer").textContent = `error ${response.status}: ${body.detail || response.statusText}`;
    } else {
      render(await response.json());
    }
  } catch (error) {
    $("footer").textContent = "dashboard unreachable: " + error;
  }
}

async function loadSession() {
  const session = await (await fetch("/api/session", {credentials: "same-origin"})).json();
  refreshMs = session.refresh_seconds * 1000;
  $("login-form").classList.toggle("hidden", session.authenticated || !session.password_login);
  $("auth-user").classList.toggle("hidden", !session.authenticated);
  $("logout-button").classList.toggle("hidden", !session.authenticated);
  $("auth-user").textContent = session.authenticated ? "signed in as " + session.user : "";
  document.body.dataset.authenticated = String(session.authenticated);
  for (const id of ["kill-button", "pause-button", "resume-button"]) {
    $(id).title = session.controls_enabled ? "" : "controls disabled: no password hash or token configured";
  }
  return session;
}

async function post(url, body) {
  const response = await fetch(url, {method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  const data = await response.json().catch(() => ({}));
  return {response, data};
}

async function control(name, question) {
  const message = $("control-message");
  if (question && !window.confirm(question)) return;
  const {response, data} = await post("/api/controls/" + name, {reason: $("control-reason").value});
  message.className = response.ok ? "ok" : "alarm";
  message.dataset.status = String(response.status);
  message.textContent = response.ok
    ? `${data.control} applied by ${data.actor} at ${shortTime(data.at)}` + (data.journaled ? " (journaled)"
      : " — NOT journaled: " + data.journal_error)
    : `refused (${response.status}): ${data.detail || response.statusText}`;
  refresh();
}

document.addEventListener("DOMContentLoaded", async () => {
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const {response, data} = await post("/api/login",
      {username: $("login-username").value, password: $("login-password").value});
    $("login-password").value = "";
    $("control-message").className = response.ok ? "ok" : "alarm";
    $("control-message").textContent = response.ok ? "logged in" : `login refused: ${data.detail}`;
    await loadSession();
    refresh();
  });
  $("logout-button").addEventListener("click", async () => {
    await post("/api/logout", {});
    await loadSession();
  });
  $("kill-button").addEventListener("click",
    () => control("kill", "Engage the kill switch? The executor stops entering at its next bar."));
  $("pause-button").addEventListener("click", () => control("pause"));
  $("resume-button").addEventListener("click", () => control("resume"));
  await loadSession();
  await refresh();
  timer = setInterval(refresh, refreshMs);
});
