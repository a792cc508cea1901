// The operator workbench: active cases by severity, a case's evidence chart, and its actions.
// Plain browser JavaScript served by the API itself (no build step, nothing fetched from elsewhere);
// every call goes through the same routes and keys as any other client.
"use strict";

const KEY = "iot-lake-api-key"; // sessionStorage: the key lives as long as the tab, never on disk
const SEVERITY_RANK = { critical: 0, warning: 1, info: 2 };
const SVG = "http://www.w3.org/2000/svg";
const HOUR = 3600 * 1000;
const MAX_RANGE = 7 * 24 * HOUR; // the series route's bound
let selected = null;

const $ = (id) => document.getElementById(id);

function say(text, error = false) {
  $("message").textContent = text;
  $("message").className = error ? "error" : "";
}

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const headers = { "X-API-Key": sessionStorage.getItem(KEY) || "", ...(options.headers || {}) };
  const response = await fetch(path, { ...options, headers });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) {
    signOut("That key was not accepted: enter a valid operator key.");
  }
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    throw new ApiError(response.status, detail || response.statusText);
  }
  return body;
}

function signOut(reason = "") {
  sessionStorage.removeItem(KEY);
  selected = null;
  $("app").hidden = true;
  $("sign-out").hidden = true;
  $("key-form").hidden = false;
  say(reason, Boolean(reason));
}

async function signIn(event) {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("api-key").value.trim());
  $("api-key").value = "";
  await start();
}

async function start() {
  $("key-form").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = false;
  try {
    await loadCases();
  } catch (error) {
    if (error.status !== 401) say(`Could not load cases: ${error.message}`, true);
  }
}

function bySeverity(a, b) {
  return SEVERITY_RANK[a.severity] - SEVERITY_RANK[b.severity] || b.start.localeCompare(a.start);
}

async function loadCases() {
  const [open, acknowledged] = await Promise.all(
    ["open", "acknowledged"].map((status) => api(`/cases?status=${status}&limit=1000`)),
  );
  const cases = [...open, ...acknowledged].sort(bySeverity);
  const body = $("cases").querySelector("tbody");
  body.replaceChildren(...cases.map(caseRow));
  $("no-cases").hidden = cases.length > 0;
}

function caseRow(c) {
  const row = document.createElement("tr");
  row.dataset.key = c.key;
  row.dataset.status = c.status;
  const cells = [c.severity, c.device_id, c.metric, time(c.start), c.status, c.max_score.toFixed(2)];
  for (const value of cells) {
    const cell = row.insertCell();
    cell.textContent = value;
  }
  row.cells[0].className = `sev-${c.severity}`;
  row.classList.toggle("selected", c.key === selected);
  row.addEventListener("click", () => showCase(c.key));
  return row;
}

function time(iso) {
  return new Date(iso).toISOString().replace("T", " ").slice(0, 16) + "Z";
}

async function showCase(key) {
  selected = key;
  for (const row of $("cases").querySelectorAll("tbody tr")) row.classList.toggle("selected", row.dataset.key === key);
  const detail = await api(`/cases/${encodeURIComponent(key)}`);
  $("case").hidden = false;
  $("case").dataset.key = key;
  $("case-title").textContent = `${detail.device_id} · ${detail.metric} · since ${time(detail.start)}`;
  $("case-status").textContent = `${detail.status} · severity ${detail.severity} · max score ${detail.max_score.toFixed(2)}`;
  $("case-status").dataset.status = detail.status;
  $("history").replaceChildren(
    ...detail.history.map((h) => {
      const item = document.createElement("li");
      item.textContent = `${time(h.at)} ${h.from_status || "–"} → ${h.to_status} by ${h.actor}${h.note ? `: ${h.note}` : ""}`;
      return item;
    }),
  );
  drawChart(detail.evidence, await seriesAround(detail));
}

async function seriesAround(detail) {
  // An hour either side of the anomalous window, within the route's 7-day bound (its latest 7 days).
  const to = new Date(detail.evidence.window_end).getTime() + HOUR;
  const from = Math.max(new Date(detail.evidence.window_start).getTime() - HOUR, to - MAX_RANGE);
  const points = [];
  let token = null;
  try {
    do {
      const query = new URLSearchParams({
        metric: detail.metric,
        from: new Date(from).toISOString(),
        to: new Date(to).toISOString(),
        grain: to - from > 2 * 24 * HOUR ? "5min" : "1min",
        limit: "5000",
      });
      if (token) query.set("page_token", token);
      const page = await api(`/devices/${encodeURIComponent(detail.device_id)}/series?${query}`);
      points.push(...page.points);
      token = page.next_page_token;
    } while (token && points.length < 20000);
  } catch (error) {
    if (error.status !== 404) throw error; // a device no longer in the registry: evidence only
  }
  return { from, to, points };
}

function drawChart(evidence, series) {
  const width = 760, height = 280, left = 56, right = 44, top = 12, bottom = 30;
  const evidencePoints = evidence.actual_values.map(([ts, value]) => [new Date(ts).getTime(), value]);
  const values = [
    ...series.points.flatMap((p) => [p.mean, ...(p.forecast ? [p.forecast.lo_95, p.forecast.hi_95] : [])]),
    ...evidencePoints.map(([, v]) => v),
    evidence.expected_lo,
    evidence.expected_hi,
  ].filter((v) => v !== null && v !== undefined && Number.isFinite(v));
  const lo = Math.min(...values), hi = Math.max(...values);
  const pad = (hi - lo) * 0.05 || 1;
  const from = Math.min(series.from, ...evidencePoints.map(([t]) => t));
  const to = Math.max(series.to, ...evidencePoints.map(([t]) => t));
  const x = (t) => left + ((t - from) / (to - from || 1)) * (width - left - right);
  const y = (v) => top + (1 - (v - lo + pad) / (hi - lo + 2 * pad)) * (height - top - bottom);
  const yScore = (s) => top + (1 - s) * (height - top - bottom);
  const svg = element("svg", { id: "evidence-chart", width, height, viewBox: `0 0 ${width} ${height}` });
  const at = (p) => new Date(p.bucket_start).getTime();

  for (const run of runs(series.points, (p) => p.forecast)) {
    const upper = run.map((p) => `${x(at(p))},${y(p.forecast.hi_95)}`);
    const lower = run.reverse().map((p) => `${x(at(p))},${y(p.forecast.lo_95)}`);
    svg.append(element("polygon", { class: "band", points: [...upper, ...lower].join(" "), fill: "#c9d7f7" }));
  }
  for (const bound of [evidence.expected_lo, evidence.expected_hi].filter(Number.isFinite)) {
    const line = { x1: left, x2: width - right, y1: y(bound), y2: y(bound), stroke: "#8aa6e8" };
    svg.append(element("line", { ...line, class: "evidence-band", "stroke-dasharray": "4 3" }));
  }
  const actual = series.points.map((p) => `${x(at(p))},${y(p.mean)}`).join(" ");
  if (actual) svg.append(element("polyline", { class: "actual", points: actual, fill: "none", stroke: "#1f4fd1" }));
  for (const run of runs(series.points, (p) => p.score !== null && p.score !== undefined)) {
    const scores = run.map((p) => `${x(at(p))},${yScore(p.score)}`).join(" ");
    svg.append(element("polyline", { class: "score", points: scores, fill: "none", stroke: "#c27a00" }));
  }
  for (const [t, v] of evidencePoints) {
    if (v === null) {
      // A silent sensor's mark has no reading: a line at the minute it fell silent, not a point at 0.
      const line = { x1: x(t), x2: x(t), y1: top, y2: height - bottom, stroke: "#d11f3a" };
      svg.append(element("line", { ...line, class: "silence", "stroke-dasharray": "2 2" }));
    } else {
      svg.append(element("circle", { class: "evidence", cx: x(t), cy: y(v), r: 3.5, fill: "#d11f3a" }));
    }
  }
  axes(svg, { width, height, left, right, top, bottom, lo, hi, from, to });
  $("chart").replaceChildren(svg);
}

function runs(points, has) {
  // Consecutive points that all have something (a band, a score): one shape each, gaps left open.
  const out = [];
  let current = [];
  for (const p of points) {
    if (has(p)) current.push(p);
    else if (current.length) (out.push(current), (current = []));
  }
  if (current.length) out.push(current);
  return out;
}

function axes(svg, { width, height, left, right, top, bottom, lo, hi, from, to }) {
  const label = (text, attrs) => {
    const t = element("text", { "font-size": 11, fill: "#556", ...attrs });
    t.textContent = text;
    svg.append(t);
  };
  svg.append(element("rect", { x: left, y: top, width: width - left - right, height: height - top - bottom, fill: "none", stroke: "#ccd" }));
  label(hi.toFixed(1), { x: 4, y: top + 10 });
  label(lo.toFixed(1), { x: 4, y: height - bottom });
  label("1", { x: width - right + 6, y: top + 10 });
  label("0", { x: width - right + 6, y: height - bottom });
  label(time(new Date(from).toISOString()), { x: left, y: height - 8 });
  label(time(new Date(to).toISOString()), { x: width - right - 110, y: height - 8 });
}

function element(name, attrs) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

async function act(action) {
  if (!selected) return;
  const note = $("note").value.trim();
  try {
    const updated = await api(`/cases/${encodeURIComponent(selected)}/${action}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(note ? { note } : {}),
    });
    $("note").value = "";
    say(`Case ${updated.device_id} · ${updated.metric} is now ${updated.status}.`);
    await loadCases();
    await showCase(updated.key);
  } catch (error) {
    if (error.status === 403) say("This key has read scope: acting on cases needs an operator key.", true);
    else if (error.status !== 401) say(`Could not ${action}: ${error.message}`, true);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("key-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => signOut());
  $("refresh").addEventListener("click", () => loadCases().catch((e) => say(e.message, true)));
  for (const button of document.querySelectorAll(".actions button")) {
    button.addEventListener("click", () => act(button.dataset.action));
  }
  if (sessionStorage.getItem(KEY)) start();
  else signOut();
});
