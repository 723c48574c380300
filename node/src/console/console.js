// Herald's web console (issue 18). No data is in the page: everything is
// fetched with the operator's key, kept in sessionStorage for this tab.
// Served with a Content-Security-Policy that allows no inline script.
"use strict";

const KEY = "herald-console-key";
// How often the cluster view is refreshed, and after how long without a
// fresh answer it is marked stale.
const REFRESH_MS = 1000;
const STALE_MS = 3000;
// The most ids one lookup takes (the node's max-ids-per-query default).
const MAX_IDS = 10000;

const $ = (id) => document.getElementById(id);
let lastFresh = 0;
let refreshTimer = null;
let watchAbort = null;

function key() { return sessionStorage.getItem(KEY); }

async function api(method, path, body) {
  const headers = { authorization: "Bearer " + key() };
  if (body !== undefined) headers["content-type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let json = null;
  try { json = await r.json(); } catch (_) { /* not JSON */ }
  if (r.status === 401) { logout("credential refused: " + code(json)); throw new Error("unauthorized"); }
  return { status: r.status, json };
}

function code(json) { return json && json.error ? json.error.code + ": " + json.error.message : "no answer"; }

function show(view) {
  document.body.dataset.view = view;
  for (const v of ["login", "cluster", "presence", "messages", "outbox"]) $(v + "-view").hidden = v !== view;
  $("nav").hidden = view === "login";
  for (const a of document.querySelectorAll("nav a[data-tab]")) {
    if (a.dataset.tab === view) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
}

function logout(why) {
  sessionStorage.removeItem(KEY);
  if (refreshTimer) { clearInterval(refreshTimer); refreshTimer = null; }
  if (watchAbort) { watchAbort.abort(); watchAbort = null; }
  $("login-error").textContent = why || "";
  for (const tb of document.querySelectorAll("tbody")) tb.replaceChildren();
  for (const id of ["messages-summary", "outbox-status", "lookup-status", "media", "action-result"]) $(id).textContent = "";
  samples.length = 0;
  msamples.length = 0;
  rowsByUid.clear();
  show("login");
}

async function login(ev) {
  ev.preventDefault();
  sessionStorage.setItem(KEY, $("key").value.trim());
  $("key").value = "";
  let r;
  try { r = await api("GET", "/v1/cluster"); } catch (_) { return; }
  if (r.status !== 200) { logout("refused: " + code(r.json)); return; }
  $("login-error").textContent = "";
  start();
}

function start() {
  route();
  refresh();
  if (!refreshTimer) refreshTimer = setInterval(refresh, REFRESH_MS);
}

function route() {
  const tab = (location.hash || "#cluster").slice(1);
  show(["presence", "messages", "outbox"].includes(tab) ? tab : "cluster");
  if (tab === "outbox") loadOutbox();
  if (tab === "messages") loadQueues();
}

// Bytes for people: B, KiB, MiB, GiB, TiB.
function fmtBytes(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i === 0 ? String(n) : n.toFixed(1)) + " " + u[i];
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "—" : String(text);
  if (cls) td.className = cls;
  tr.appendChild(td);
}

async function refresh() {
  if (!key()) return;
  let r;
  try { r = await api("GET", "/v1/cluster"); } catch (_) { markFreshness(); return; }
  if (refreshes++ % METRICS_EVERY === 0) sampleMetrics().catch(() => {});
  if (r.status === 200) { lastFresh = Date.now(); render(r.json); } else if (r.status === 403) {
    $("freshness").textContent = "refused: " + code(r.json);
  }
  markFreshness();
}

function markFreshness() {
  const age = Date.now() - lastFresh;
  const f = $("freshness");
  if (!lastFresh) return;
  f.className = age > STALE_MS ? "stale" : "ok";
  f.textContent = age > STALE_MS ? "stale: last answer " + Math.round(age / 1000) + " s ago" : "live";
  document.body.dataset.stale = String(age > STALE_MS);
}

// The last minutes of samples for the charts: (time, applied index,
// offsets by node). At most CHART_SAMPLES (5 minutes at one a second).
const CHART_SAMPLES = 300;
const samples = [];
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"];

function sample(c) {
  const offsets = {};
  for (const n of c.nodes) if (n.clock) offsets[n.number] = n.clock.offset_ms;
  samples.push({ t: Date.now(), applied: c.applied_index, offsets });
  while (samples.length > CHART_SAMPLES) samples.shift();
  document.body.dataset.samples = String(samples.length);
}

function plot(canvas, series) {
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  const pts = series.flatMap((s) => s.points);
  if (pts.length < 2) return;
  const t0 = Math.min(...pts.map((p) => p[0])), t1 = Math.max(...pts.map((p) => p[0]));
  let lo = Math.min(0, ...pts.map((p) => p[1])), hi = Math.max(...pts.map((p) => p[1]));
  if (hi === lo) hi = lo + 1;
  const x = (t) => 30 + ((t - t0) / Math.max(1, t1 - t0)) * (canvas.width - 40);
  const y = (v) => canvas.height - 15 - ((v - lo) / (hi - lo)) * (canvas.height - 25);
  g.fillStyle = "#555"; g.font = "10px sans-serif";
  g.fillText(hi.toFixed(hi < 10 ? 2 : 0), 2, 10); g.fillText(lo.toFixed(lo > -10 ? 2 : 0), 2, canvas.height - 15);
  series.forEach((s, i) => {
    g.strokeStyle = COLORS[i % COLORS.length]; g.beginPath();
    s.points.forEach((p, j) => (j ? g.lineTo(x(p[0]), y(p[1])) : g.moveTo(x(p[0]), y(p[1]))));
    g.stroke();
  });
}

function charts() {
  const rate = [];
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1], b = samples[i];
    rate.push([b.t, Math.max(0, (b.applied - a.applied) * 1000 / Math.max(1, b.t - a.t))]);
  }
  plot($("chart-rate"), [{ points: rate }]);
  const nodes = [...new Set(samples.flatMap((s) => Object.keys(s.offsets)))].sort();
  plot($("chart-clock"), nodes.map((n) => ({ points: samples.filter((s) => n in s.offsets).map((s) => [s.t, s.offsets[n]]) })));
  $("chart-legend").textContent = nodes.map((n, i) => "node " + n + ": " + ["blue", "red", "green", "purple", "orange", "brown", "pink"][i % 7]).join(", ");
}

// Samples of this node's /metrics, every METRICS_EVERY refreshes: the
// counters and the write-latency histogram, for rates and percentiles
// between consecutive samples.
const METRICS_EVERY = 2;
const msamples = [];
let refreshes = 0;

function parseMetrics(text) {
  const out = { writes: 0, queryIds: 0, buckets: [] };
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const sp = line.lastIndexOf(" ");
    const name = line.slice(0, sp), v = Number(line.slice(sp + 1));
    if (name === "herald_presence_write_requests_total") out.writes = v;
    else if (name === "herald_presence_query_ids_total") out.queryIds = v;
    else if (name.startsWith("herald_presence_write_seconds_bucket{")) {
      const m = /le="([^"]+)"/.exec(name);
      if (m) out.buckets.push([m[1] === "+Inf" ? Infinity : Number(m[1]), v]);
    }
  }
  out.buckets.sort((a, b) => a[0] - b[0]);
  return out;
}

// The q-quantile (seconds) of the observations between two histograms.
function quantile(q, a, b) {
  const d = b.buckets.map(([le, n], i) => [le, n - ((a.buckets[i] || [le, 0])[1])]);
  const total = d.length ? d[d.length - 1][1] : 0;
  if (total <= 0) return null;
  const want = q * total;
  for (const [le, n] of d) if (n >= want) return le;
  return null;
}

async function sampleMetrics() {
  const r = await fetch("/metrics", { headers: { authorization: "Bearer " + key() } });
  const st = $("metrics-status");
  if (r.status !== 200) { st.textContent = "/metrics refused (" + r.status + "): give the key the metrics scope"; return; }
  st.textContent = "";
  msamples.push({ t: Date.now(), m: parseMetrics(await r.text()) });
  while (msamples.length > CHART_SAMPLES / METRICS_EVERY) msamples.shift();
  const req = [[], []], lat = [[], []];
  for (let i = 1; i < msamples.length; i++) {
    const a = msamples[i - 1], b = msamples[i], dt = Math.max(1, b.t - a.t) / 1000;
    req[0].push([b.t, (b.m.writes - a.m.writes) / dt]);
    req[1].push([b.t, (b.m.queryIds - a.m.queryIds) / dt]);
    const p50 = quantile(0.5, a.m, b.m), p99 = quantile(0.99, a.m, b.m);
    if (p50 !== null && isFinite(p50)) lat[0].push([b.t, p50 * 1000]);
    if (p99 !== null && isFinite(p99)) lat[1].push([b.t, p99 * 1000]);
  }
  plot($("chart-requests"), req.map((points) => ({ points })));
  plot($("chart-latency"), lat.map((points) => ({ points })));
  document.body.dataset.metricsSamples = String(msamples.length);
}

async function member(ev) {
  ev.preventDefault();
  const op = ev.submitter ? ev.submitter.dataset.op : "add-learner";
  const number = Number($("member-number").value);
  if (!confirm(op + " node " + number + "?")) return;
  const out = $("action-result");
  let r;
  try { r = await api("POST", "/v1/cluster/" + op, { number }); } catch (_) { return; }
  out.className = r.status === 200 ? "ok" : "error";
  out.textContent = r.status === 200 ? op + " node " + number + ": done" : op + " refused (" + r.status + ") " + code(r.json);
  document.body.dataset.actionStatus = String(r.status);
  refresh();
}

async function loadQueues() {
  let r;
  try { r = await api("GET", "/v1/messages/queues?top=20"); } catch (_) { return; }
  const st = $("messages-summary");
  if (r.status !== 200) { st.className = "error"; st.textContent = "refused (" + r.status + ") " + code(r.json); return; }
  const q = r.json;
  st.className = "";
  st.textContent = `${q.stored_messages} stored messages in ${q.inboxes} inboxes; ${q.groups} groups; at revision ${q.revision}`;
  $("queues").querySelector("tbody").replaceChildren(...q.queues.map((l) => {
    const tr = document.createElement("tr"); tr.dataset.uid = l.uid;
    cell(tr, l.uid); cell(tr, l.queued); cell(tr, (l.oldest_age_ms / 1000).toFixed(1) + " s");
    return tr;
  }));
  $("broadcasts").querySelector("tbody").replaceChildren(...q.broadcasts.map((b) => {
    const tr = document.createElement("tr");
    cell(tr, b.id); cell(tr, b.from); cell(tr, new Date(b.expires_at_ms).toISOString()); cell(tr, b.acked);
    return tr;
  }));
  document.body.dataset.queues = String(q.queues.length);
}

async function loadOutbox() {
  const dead = $("dead").checked;
  let r;
  try { r = await api("GET", "/v1/outbox?limit=1000" + (dead ? "&dead=true" : "")); } catch (_) { return; }
  const st = $("outbox-status");
  if (r.status !== 200) { st.className = "error"; st.textContent = "refused (" + r.status + ") " + code(r.json); return; }
  st.className = "";
  st.textContent = r.json.total + (dead ? " dead-lettered" : " pending") + " item(s)" + (r.json.total > r.json.items.length ? ", first " + r.json.items.length + " shown" : "");
  const when = (ms) => (ms ? new Date(ms).toISOString() : null);
  $("outbox").querySelector("tbody").replaceChildren(...r.json.items.map((it) => {
    const tr = document.createElement("tr");
    tr.dataset.id = it.id;
    for (const v of [it.id, it.uid, it.module, it.account, it.revision, it.attempts, when(it.next_attempt_ms), it.last_error || null, when(it.dead_ms)]) cell(tr, v);
    const td = document.createElement("td");
    const btn = document.createElement("button");
    btn.type = "button"; btn.textContent = "Resend";
    btn.addEventListener("click", async () => {
      if (!confirm("Resend item " + it.id + " now?")) return;
      const a = await api("POST", "/v1/outbox/" + it.id + "/resend");
      st.textContent = a.status === 200 ? "item " + it.id + " queued again" : "resend refused (" + a.status + ") " + code(a.json);
      loadOutbox();
    });
    td.appendChild(btn); tr.appendChild(td);
    return tr;
  }));
  document.body.dataset.outboxTotal = String(r.json.total);
}

function render(c) {
  sample(c);
  charts();
  $("cluster-name").textContent = c.cluster;
  $("leader").textContent = c.leader ?? "none";
  document.body.dataset.leader = String(c.leader ?? "");
  $("master").textContent = c.master ?? "none";
  $("time-master").textContent = c.time_master ?? "none";
  $("term").textContent = c.term;
  $("indexes").textContent = c.commit_index + " / " + c.applied_index;
  $("asked").textContent = "node " + c.node + " (" + c.state + ")";
  const last = c.last_log_index;
  const body = $("nodes").querySelector("tbody");
  const rows = [];
  for (const n of c.nodes) {
    const tr = document.createElement("tr");
    tr.dataset.node = n.number;
    tr.dataset.role = n.role;
    if (n.role === "leader") tr.className = "leader";
    cell(tr, n.number);
    cell(tr, n.zone || "default");
    cell(tr, n.role);
    cell(tr, n.healthy ? "healthy" : "unhealthy", n.healthy ? "ok" : "error");
    cell(tr, n.matched_index);
    cell(tr, n.lag_entries != null ? n.lag_entries + (n.lag_ms != null ? " (" + n.lag_ms + " ms)" : "")
      : n.matched_index == null || last == null ? null : Math.max(0, last - n.matched_index));
    cell(tr, n.clock ? n.clock.offset_ms.toFixed(2) + " ms" : null);
    cell(tr, n.clock ? (n.clock.in_tolerance ? "yes" : "NO") : null, n.clock && !n.clock.in_tolerance ? "error" : "");
    cell(tr, n.gateway ? n.gateway.sessions : null);
    cell(tr, n.gateway ? n.gateway.load.toFixed(3) + (n.gateway.fresh ? "" : " (stale)") : null);
    const nm = n.media;
    if (nm) tr.dataset.mediaFiles = String(nm.files);
    cell(tr, nm ? (nm.healthy ? "" : "UNHEALTHY ") + nm.files + " files, " + fmtBytes(nm.bytes) + ", " +
      fmtBytes(nm.free_bytes) + " free" + (nm.open_uploads ? ", " + nm.open_uploads + " uploading" : "") : null,
      nm && !nm.healthy ? "error" : "");
    cell(tr, n.publish);
    rows.push(tr);
  }
  body.replaceChildren(...rows);
  const sel = $("transfer-to");
  const want = c.nodes.filter((n) => n.role === "follower" || n.role === "leader").map((n) => String(n.number));
  if ([...sel.options].map((o) => o.value).join() !== want.join()) {
    sel.replaceChildren(...want.map((n) => { const o = document.createElement("option"); o.value = n; o.textContent = n; return o; }));
  }
  const m = c.media;
  $("media").textContent = m
    ? `${m.media} media (${fmtBytes(m.media_bytes)}, one copy each), ${m.under_replicated} under-replicated, ` +
      `${m.open_uploads} open uploads on node ${c.node}, ${m.required_replicas} replicas required; each node's storage is in the table above`
    : "—";
}

async function transfer(ev) {
  ev.preventDefault();
  const to = Number($("transfer-to").value);
  if (!confirm("Transfer leadership to node " + to + "?")) return;
  const out = $("action-result");
  out.textContent = "transferring…";
  let r;
  try { r = await api("POST", "/v1/cluster/transfer-leader", { number: to }); } catch (_) { return; }
  out.className = r.status === 200 ? "ok" : "error";
  out.textContent = r.status === 200 ? "leader is now node " + r.json.leader : "refused (" + r.status + ") " + code(r.json);
  document.body.dataset.actionStatus = String(r.status);
  refresh();
}

function parseIds(text) {
  const uids = [], sids = [];
  for (const t of text.split(/[\s,]+/).filter(Boolean)) {
    if (/^#\d+$/.test(t)) sids.push(Number(t.slice(1))); else uids.push(t);
  }
  return { uids, sids };
}

const rowsByUid = new Map();

function badgeRow(u) {
  let tr = rowsByUid.get(u.uid);
  if (!tr) { tr = document.createElement("tr"); rowsByUid.set(u.uid, tr); $("badges").querySelector("tbody").appendChild(tr); }
  tr.replaceChildren();
  tr.dataset.uid = u.uid;
  const state = u.state || (u.online ? "online" : "offline");
  tr.dataset.state = state;
  tr.className = "state-" + state;
  cell(tr, u.uid);
  cell(tr, u.sid || null);
  cell(tr, state);
  cell(tr, (u.clients || []).join(", ") || null);
  cell(tr, u.accepts_strangers === undefined ? null : (u.accepts_strangers ? "yes" : "no"));
  cell(tr, u.changed_at_ms ? new Date(u.changed_at_ms).toISOString() : null);
  cell(tr, u.revision);
}

async function lookup(ev) {
  ev.preventDefault();
  if (watchAbort) { watchAbort.abort(); watchAbort = null; }
  const { uids, sids } = parseIds($("ids").value);
  const st = $("lookup-status");
  if (uids.length + sids.length === 0) { st.textContent = "no ids"; return; }
  if (uids.length + sids.length > MAX_IDS) { st.textContent = "at most " + MAX_IDS + " ids"; return; }
  rowsByUid.clear();
  $("badges").querySelector("tbody").replaceChildren();
  let r;
  try { r = await api("POST", "/v1/presence/query", { uids, sids }); } catch (_) { return; }
  if (r.status !== 200) { st.className = "error"; st.textContent = "refused (" + r.status + ") " + code(r.json); return; }
  for (const u of r.json.users) badgeRow(u);
  for (const uid of r.json.unknown) badgeRow({ uid, state: "unknown" });
  st.className = "";
  st.textContent = `${r.json.users.length} known, ${r.json.unknown.length} unknown, at revision ${r.json.revision}` +
    ($("live").checked ? "; following live…" : " (a one-time query; tick \"follow live\" to watch)");
  document.body.dataset.lookupRevision = String(r.json.revision);
  if ($("live").checked) follow(uids, r.json.revision);
}

// Follows the uids through the SSE watch feed, read with fetch so the key
// travels in a header (EventSource cannot send one); resumes after a cut
// from the last revision seen.
async function follow(uids, since) {
  const ctl = new AbortController();
  watchAbort = ctl;
  let revision = since;
  while (!ctl.signal.aborted) {
    const q = new URLSearchParams();
    for (const u of uids) q.append("uid", u);
    q.set("since_revision", String(revision));
    try {
      const r = await fetch("/v1/presence/watch?" + q, { headers: { authorization: "Bearer " + key() }, signal: ctl.signal });
      if (r.status !== 200) { $("lookup-status").textContent = "watch refused (" + r.status + ")"; return; }
      document.body.dataset.watching = "true";
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const ev = buf.slice(0, i); buf = buf.slice(i + 2);
          const data = ev.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
          if (!data) continue;
          const f = JSON.parse(data);
          if (f.type === "snapshot" || f.type === "change") for (const u of f.users) badgeRow(u);
          if (f.type === "snapshot") for (const uid of f.unknown || []) badgeRow({ uid, state: "unknown" });
          if (f.revision !== undefined && f.type !== "reset") { revision = f.revision; document.body.dataset.watchRevision = String(revision); }
        }
      }
    } catch (e) {
      if (ctl.signal.aborted) return;
    }
    document.body.dataset.watching = "false";
    await new Promise((res) => setTimeout(res, 500));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  $("transfer-form").addEventListener("submit", transfer);
  $("member-form").addEventListener("submit", member);
  $("outbox-refresh").addEventListener("click", loadOutbox);
  $("dead").addEventListener("change", loadOutbox);
  $("lookup-form").addEventListener("submit", lookup);
  // A file of ids (at most 1 MiB: 10,000 ids of up to ~100 bytes) fills the list.
  $("ids-file").addEventListener("change", async () => {
    const f = $("ids-file").files[0];
    if (!f) return;
    if (f.size > 1 << 20) { $("lookup-status").textContent = "file over 1 MiB"; return; }
    $("ids").value = await f.text();
  });
  $("logout").addEventListener("click", () => logout("logged out"));
  window.addEventListener("hashchange", () => { if (key()) route(); });
  if (key()) start(); else show("login");
  // Handlers are attached: forms submit through them from now on.
  document.body.dataset.ready = "true";
});
