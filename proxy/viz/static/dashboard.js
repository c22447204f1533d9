// meshproxy viz dashboard: pages from the JSON API, kept live by Server-Sent Events (no reloads).
"use strict";

const TAP_ROWS = 500;  // the tap view keeps this many events, newest first
let snapshot = null;
let tapSource = null;
const charts = {};

const pct = (v) => (v == null ? "-" : (100 * v).toFixed(2) + "%");
const rps = (v) => (v == null ? "-" : v.toFixed(1) + "rps");
const ms = (v) => (v == null ? "-" : Math.round(v) + "ms");
const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));

function cell(text, cls) { return `<td class="${cls || ""}">${esc(text)}</td>`; }
function rateClass(v) { return v == null ? "" : v < 0.95 ? "bad" : "good"; }
function secured(e) { return e.secured ? cell("\u221a", "good text") : cell(e.no_tls_reason || "no", "bad text"); }
function fill(id, rows) { document.querySelector(`#${id} tbody`).innerHTML = rows.join(""); }

function workloadCells(w) {
  return cell(w.meshed ?? "-") + cell(pct(w.success), rateClass(w.success)) + cell(rps(w.rps)) +
    cell(ms(w.latency_ms_p50)) + cell(ms(w.latency_ms_p95)) + cell(ms(w.latency_ms_p99)) + cell(pct(w.tls_share));
}

function renderOverview() {
  if (!snapshot) return;
  fill("workloads", snapshot.workloads.map((w) =>
    `<tr data-name="${esc(w.name)}"><td class="text">${esc(w.namespace)}</td>` +
    `<td class="text"><a href="#/workload/${encodeURIComponent(w.namespace)}/${encodeURIComponent(w.name)}">` +
    `${esc(w.name)}</a></td>` + workloadCells(w) + "</tr>"));
  fill("edges", snapshot.edges.map((e) =>
    `<tr><td class="text">${esc(e.src)}</td>${cell(e.dst, "text")}${cell(rps(e.rps))}` +
    `${cell(e.client_id || "-", "text")}${cell(e.server_id || "-", "text")}${secured(e)}</tr>`));
  const down = snapshot.unreachable.map((u) => `proxy ${esc(u.proxy)} unreachable: ${esc(u.error)}`);
  if (snapshot.error) down.push("error: " + esc(snapshot.error));
  document.getElementById("unreachable").innerHTML = down.join("<br>");
  fetch("/api/charts").then((r) => r.json()).then((data) => {
    const keys = Object.keys(data).sort();
    chart("chart-success", "success rate (%)", keys, data, (k) => data[k].success.map((v) => v == null ? null : 100 * v));
    chart("chart-rps", "requests per second", keys, data, (k) => data[k].rps);
  });
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

// One uPlot per element: built again when its series change, otherwise fed new data.
function chart(id, title, labels, data, column) {
  const el = document.getElementById(id);
  // All series share the time axis of the longest history (missing points are null).
  const times = [...new Set(labels.flatMap((k) => data[k].t))].sort((a, b) => a - b);
  const ys = labels.map((k) => {
    const at = new Map(data[k].t.map((t, i) => [t, column(k)[i]]));
    return times.map((t) => at.has(t) ? at.get(t) : null);
  });
  const signature = title + "|" + labels.join(",");
  const existing = charts[id];
  if (existing && existing.signature === signature) {
    existing.plot.setData([times, ...ys]);
    return;
  }
  if (existing) existing.plot.destroy();
  // Percentages on a fixed 0-100 axis; y labels short and given room (uPlot's default width clips "19.97").
  const y = title.includes("%") ? {range: [0, 100]} : {range: (u, min, max) => [0, Math.max(1, (max || 0) * 1.2)]};
  const opts = {
    title, width: 520, height: 240, scales: {x: {time: true}, y},
    axes: [{}, {size: 60, values: (u, ticks) => ticks.map((v) => (v == null ? "" : String(+v.toFixed(2))))}],
    series: [{}, ...labels.map((k, i) => ({label: k, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true}))],
  };
  charts[id] = {signature, plot: new uPlot(opts, [times, ...ys], el)};
}

async function renderWorkload(ns, name) {
  document.getElementById("workload-title").textContent = `${ns}/${name}`;
  const resp = await fetch(`/api/workloads/${encodeURIComponent(ns)}/${encodeURIComponent(name)}`);
  if (!resp.ok) { fill("workload-stat", [`<tr><td colspan="7">no traffic or proxy seen for ${esc(name)}</td></tr>`]); return; }
  const d = await resp.json();
  // A slower answer for a page left meanwhile must not overwrite the page now shown.
  if (location.hash.split("?")[0] !== `#/workload/${encodeURIComponent(ns)}/${encodeURIComponent(name)}`) return;
  const kind = {deployment: "deploy", pod: "po"}[d.workload.kind] || "deploy";
  document.getElementById("workload-title").textContent = `${ns}/${kind}/${name}`;
  document.getElementById("workload-tap").href = `#/tap?to=${encodeURIComponent(kind + "/" + name)}`;
  fill("workload-stat", [`<tr>${workloadCells(d.workload)}</tr>`]);
  fill("callers", d.callers.map((e) => `<tr>${cell(e.src, "text")}${cell(rps(e.rps))}${cell(e.client_id || "-", "text")}${secured(e)}</tr>`));
  fill("callees", d.callees.map((e) => `<tr>${cell(e.dst, "text")}${cell(rps(e.rps))}${cell(e.server_id || "-", "text")}${secured(e)}</tr>`));
  fill("routes", d.routes.map((r) => `<tr>${cell(r.route, "text")}${cell(r.service, "text")}` +
    `${cell(pct(r.effective_success), rateClass(r.effective_success))}${cell(rps(r.effective_rps))}` +
    `${cell(pct(r.actual_success))}${cell(rps(r.actual_rps))}${cell(ms(r.latency_ms_p50))}` +
    `${cell(ms(r.latency_ms_p95))}${cell(ms(r.latency_ms_p99))}</tr>`));
  const key = `${ns}/${name}`;
  const c = d.charts[key] || {t: [], p50: [], p95: [], p99: [], success: []};
  const one = {p50: {t: c.t}, p95: {t: c.t}, p99: {t: c.t}};
  chart("chart-latency", "latency (ms)", ["p50", "p95", "p99"], one, (k) => c[k]);
  chart("chart-workload-success", "success rate (%)", [key], {[key]: c}, () => c.success.map((v) => v == null ? null : 100 * v));
}

function tapRow(ev) {
  const out = ev.proxyDirection === "OUTBOUND";
  const tls = (out ? ev.destination.labels : ev.source.labels).tls || "";
  let status = "", latency = "";
  if (ev.event === "response_init") { status = ev.httpStatus; latency = (ev.sinceRequestInitUs / 1000).toFixed(1) + "ms"; }
  if (ev.event === "response_end") { latency = (ev.sinceRequestInitUs / 1000).toFixed(1) + "ms"; }
  const kind = {request_init: "req", response_init: "rsp", response_end: "end"}[ev.event] || ev.event;
  return `<tr class="${esc(ev.event)}" data-id="${esc(ev.id)}">${cell(new Date().toLocaleTimeString(), "text")}` +
    `${cell(kind, "text")}${cell(out ? "out" : "in", "text")}${cell(ev.source.address, "text")}` +
    `${cell(ev.destination.address, "text")}${cell(tls, "text")}${cell(ev.method || "", "text")}` +
    `${cell(ev.authority || "", "text")}${cell(ev.path || "", "text")}${cell(status)}${cell(latency)}</tr>`;
}

function startTap(params) {
  stopTap();
  const body = document.querySelector("#tap tbody");
  const state = document.getElementById("tap-state");
  tapSource = new EventSource("/api/tap?" + params.toString());
  tapSource.addEventListener("started", (m) => { state.textContent = "tapping " + JSON.parse(m.data).proxies.join(", "); });
  tapSource.addEventListener("tap", (m) => {
    body.insertAdjacentHTML("afterbegin", tapRow(JSON.parse(m.data)));
    while (body.rows.length > TAP_ROWS) body.deleteRow(-1);
  });
  // A proxy whose tap ended is named after the ones tapped, with why.
  tapSource.addEventListener("stopped", (m) => { const s = JSON.parse(m.data); state.textContent += `; tap ${s.proxy}: ${s.error}`; });
  tapSource.onerror = () => { state.textContent = "tap stream lost; retrying…"; };
}

function stopTap() {
  if (tapSource) { tapSource.close(); tapSource = null; document.getElementById("tap-state").textContent = "stopped"; }
}

function route() {
  const [path, query] = location.hash.slice(1).split("?");
  const parts = (path || "/").split("/").filter(Boolean).map(decodeURIComponent);
  const page = parts[0] === "workload" ? "workload" : parts[0] === "tap" ? "tap" : "overview";
  for (const el of document.querySelectorAll(".page")) el.hidden = el.id !== "page-" + page;
  if (page !== "tap") stopTap();
  if (page === "overview") renderOverview();
  if (page === "workload") renderWorkload(parts[1], parts[2]);
  if (page === "tap") {
    const params = new URLSearchParams(query || "");
    const form = document.getElementById("tap-form");
    for (const input of form.querySelectorAll("input")) input.value = params.get(input.name) || "";
    startTap(params);
  }
}

document.getElementById("tap-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const params = new URLSearchParams();
  for (const input of e.target.querySelectorAll("input")) if (input.value) params.set(input.name, input.value);
  const target = "#/tap" + (params.toString() ? "?" + params : "");
  if (location.hash === target) route(); else location.hash = target;
});
document.getElementById("tap-stop").addEventListener("click", stopTap);
window.addEventListener("hashchange", route);

const updates = new EventSource("/api/stream");
updates.addEventListener("snapshot", (m) => {
  snapshot = JSON.parse(m.data);
  document.getElementById("status").textContent = "updated " + new Date(snapshot.at * 1000).toLocaleTimeString();
  const page = location.hash.startsWith("#/workload/") ? "workload" : location.hash.startsWith("#/tap") ? "tap" : "overview";
  if (page === "overview") renderOverview();
  if (page === "workload") { const p = location.hash.slice(2).split("/").map(decodeURIComponent); renderWorkload(p[1], p[2]); }
});
updates.onerror = () => { document.getElementById("status").textContent = "disconnected; retrying…"; };
route();
