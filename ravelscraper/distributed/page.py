"""The page ``scrapy fleet serve`` shows at ``/``: one self-contained document (inline style and
script, no font, image or script from elsewhere: it works on an offline network).

Every 2 s it fetches ``/status.json`` and shows it. Everything from Redis (identifiers, file
names, node names, reasons) goes into the page as text (``textContent``), never as markup.
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ravelscraper fleet</title>
<style>
:root { --fg: #1d2330; --muted: #667085; --line: #e3e6ec; --bg: #f6f7f9; --card: #fff;
  --ok: #1a7f37; --bad: #c62828; --warn: #a15c00; --accent: #2f6fdb; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: var(--fg); background: var(--bg); }
header { display: flex; flex-wrap: wrap; align-items: baseline; gap: 12px;
  padding: 14px 20px; background: var(--card); border-bottom: 1px solid var(--line); }
h1 { font-size: 18px; margin: 0; }
h2 { font-size: 13px; margin: 0 0 8px; text-transform: uppercase; letter-spacing: .04em;
  color: var(--muted); font-weight: 600; }
main { padding: 16px 20px; display: grid; gap: 16px; }
.muted { color: var(--muted); }
.pill { padding: 2px 10px; border-radius: 999px; font-size: 12px; font-weight: 600;
  background: #e8eaef; }
.pill.up { background: #dff3e4; color: var(--ok); }
.pill.down { background: #fde2e1; color: var(--bad); }
.cards { display: grid; gap: 16px; grid-template-columns: repeat(auto-fit, minmax(210px, 1fr)); }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: 12px 14px; min-width: 0; }
.counts { width: 100%; border-collapse: collapse; }
.counts th { text-align: left; font-weight: normal; color: var(--muted); }
.counts td { text-align: right; font-variant-numeric: tabular-nums; font-weight: 600; }
.big { font-size: 22px; font-weight: 650; font-variant-numeric: tabular-nums; }
.bar { height: 8px; background: #e8eaef; border-radius: 4px; overflow: hidden; margin: 8px 0; }
.bar > div { height: 100%; width: 0; background: var(--accent); }
table.rows { width: 100%; border-collapse: collapse; }
table.rows th, table.rows td { text-align: left; padding: 5px 8px;
  border-bottom: 1px solid var(--line); vertical-align: top; }
table.rows th { color: var(--muted); font-weight: 600; font-size: 12px; }
table.rows td.n { text-align: right; font-variant-numeric: tabular-nums; }
.alive { color: var(--ok); font-weight: 600; }
.gone { color: var(--bad); font-weight: 600; }
.wrap { overflow-wrap: anywhere; }
ul.list { margin: 0; padding-left: 18px; }
ul.list li { overflow-wrap: anywhere; margin-bottom: 3px; }
.reason { color: var(--bad); }
svg { width: 100%; height: 170px; display: block; }
svg text { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; }
.held { color: var(--warn); font-weight: 600; }
</style>
</head>
<body>
<header>
  <h1>ravelscraper fleet</h1>
  <span class="muted">job <b id="job">?</b> on <span id="where">?</span></span>
  <span id="conn" class="pill">connecting</span>
  <span id="updated" class="muted"></span>
</header>
<main>
  <div class="cards">
    <div class="card">
      <h2>Run</h2>
      <div class="big">run <span id="run">-</span></div>
      <div id="run-state" class="muted"></div>
      <div class="muted">listing: <span id="listing">-</span></div>
    </div>
    <div class="card">
      <h2>Files</h2>
      <table class="counts">
        <tr><th>listed</th><td id="files-listed">-</td></tr>
        <tr><th>verified</th><td id="files-verified">-</td></tr>
        <tr><th>failed</th><td id="files-failed">-</td></tr>
        <tr><th>pending</th><td id="files-pending">-</td></tr>
      </table>
    </div>
    <div class="card">
      <h2>Items</h2>
      <table class="counts">
        <tr><th>listed</th><td id="items-listed">-</td></tr>
        <tr><th>done</th><td id="items-done">-</td></tr>
        <tr><th>failed</th><td id="items-failed">-</td></tr>
        <tr><th>pending</th><td id="items-pending">-</td></tr>
      </table>
    </div>
    <div class="card">
      <h2>Bytes</h2>
      <div class="big" id="bytes">-</div>
      <div class="bar"><div id="bytes-bar"></div></div>
      <div><span id="rate">-</span>, ETA <span id="eta">-</span></div>
      <div class="muted"><span id="queued">-</span> entries waiting,
        <span id="inflight">-</span> in progress, <span id="start-urls">-</span> start URLs</div>
    </div>
  </div>
  <div class="card">
    <h2>Throughput, last <span id="chart-span">-</span></h2>
    <svg id="chart" viewBox="0 0 800 170" preserveAspectRatio="none"
      role="img" aria-label="bytes per second over time"></svg>
  </div>
  <div class="card">
    <h2>Nodes: <span id="nodes-alive">0</span> alive, <span id="nodes-gone">0</span> gone</h2>
    <table class="rows" id="nodes">
      <thead><tr><th>node</th><th>state</th><th>last heartbeat</th><th>files</th>
        <th>failed</th><th>bytes</th><th>rate</th><th>holds</th></tr></thead>
      <tbody></tbody>
    </table>
  </div>
  <div class="cards">
    <div class="card">
      <h2>Failed files: <span id="failures-count">0</span></h2>
      <ul class="list" id="failures"></ul>
      <h2 style="margin-top:10px">Failed items and searches: <span id="jobs-count">0</span></h2>
      <ul class="list" id="failed-jobs"></ul>
    </div>
    <div class="card">
      <h2>Rejected entries: <span id="rejected-count">0</span></h2>
      <ul class="list" id="rejected"></ul>
      <h2 style="margin-top:10px">Reclaimed from dead nodes</h2>
      <div><span id="reclaimed">0</span> requeued, <span id="dead">0</span> given up</div>
    </div>
  </div>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const put = (id, value) => { $(id).textContent = String(value); };
const SVG = "http://www.w3.org/2000/svg";

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function size(bytes) {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let value = Number(bytes) || 0, unit = 0;
  while (value >= 1000 && unit < units.length - 1) { value /= 1000; unit += 1; }
  return (unit ? value.toFixed(1) : String(value)) + " " + units[unit];
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "unknown";
  let s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  s = s % 60;
  if (h) return h + " h" + (m ? " " + m + " min" : "");
  if (m) return m + " min" + (s ? " " + s + " s" : "");
  return s + " s";
}

function ago(seconds) {
  return seconds === null || seconds === undefined ? "never" : duration(seconds) + " ago";
}

function fill(listId, pairs, total) {
  const list = $(listId);
  list.replaceChildren();
  for (const [name, reason] of pairs) {
    const li = el("li", name);
    if (reason) { li.append(": "); li.append(el("span", reason, "reason")); }
    list.append(li);
  }
  if (total > pairs.length) list.append(el("li", "and " + (total - pairs.length) + " more"));
}

function chart(t) {
  const svg = $("chart");
  svg.replaceChildren();
  const W = 800, H = 170, top = 14, bottom = 20, left = 4;
  const values = t.bytes_per_s;
  const peak = Math.max(1, ...values);
  const x = (i) => left + (i + 1) * (W - left) / values.length;
  const y = (v) => top + (H - top - bottom) * (1 - v / peak);
  const shape = (tag, attrs) => {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    svg.append(node);
    return node;
  };
  for (const frac of [0, 0.5, 1]) {
    shape("line", {x1: 0, x2: W, y1: y(peak * frac), y2: y(peak * frac),
      stroke: "#e3e6ec", "stroke-width": 1});
  }
  let points = left + "," + y(0);
  values.forEach((v, i) => { points += " " + x(i) + "," + y(v); });
  points += " " + x(values.length - 1) + "," + y(0);
  shape("polygon", {points: points, fill: "rgba(47,111,219,.18)", stroke: "none"});
  shape("polyline", {points: points.split(" ").slice(1, -1).join(" "), fill: "none",
    stroke: "#2f6fdb", "stroke-width": 2, "vector-effect": "non-scaling-stroke"});
  const label = (text, ax, ay, anchor) => {
    shape("text", {x: ax, y: ay, "font-size": 11, fill: "#667085",
      "text-anchor": anchor}).textContent = text;
  };
  label(size(peak) + "/s", 6, 11, "start");
  label(duration(t.span_s + t.end_s_ago) + " ago", 6, H - 5, "start");
  label(t.end_s_ago < 5 ? "now" : duration(t.end_s_ago) + " ago", W - 4, H - 5, "end");
  put("chart-span", duration(t.span_s));
}

function nodes(rows) {
  const body = $("nodes").tBodies[0];
  body.replaceChildren();
  for (const row of rows) {
    const tr = el("tr");
    tr.append(el("td", row.node, "wrap"));
    tr.append(el("td", row.alive ? "alive" : "gone", row.alive ? "alive" : "gone"));
    tr.append(el("td", ago(row.last_heartbeat_s_ago)));
    tr.append(el("td", row.files, "n"));
    tr.append(el("td", row.failed, "n"));
    tr.append(el("td", size(row.bytes), "n"));
    tr.append(el("td", size(row.bytes_per_s) + "/s", "n"));
    const holds = el("td", row.holds + (row.holds === 1 ? " entry" : " entries"), "wrap");
    if (row.holding.length) {
      holds.append(el("div", row.holding.join(", ") +
        (row.holds > row.holding.length ? ", ..." : ""), "muted"));
    }
    tr.append(holds);
    body.append(tr);
  }
  if (!rows.length) {
    const tr = el("tr");
    const td = el("td", "no node has sent a heartbeat in the last hour", "muted");
    td.colSpan = 8;
    tr.append(td);
    body.append(tr);
  }
}

function render(d) {
  put("job", d.job);
  put("where", d.redis);
  put("run", d.run);
  const state = {open: "open, started " + ago(d.run_opened_s_ago),
    closed: "closed " + ago(d.run_closed_s_ago)}[d.run_state] || "no run yet";
  put("run-state", state);
  for (const k of ["listed", "verified", "failed", "pending"]) put("files-" + k, d.files[k]);
  for (const k of ["listed", "done", "failed", "pending"]) put("items-" + k, d.item_counts[k]);
  put("bytes", size(d.bytes.verified) + " of " + size(d.bytes.listed));
  const share = d.bytes.listed ? 100 * d.bytes.verified / d.bytes.listed : 0;
  $("bytes-bar").style.width = Math.min(100, share).toFixed(1) + "%";
  put("rate", size(d.bytes_per_s) + "/s");
  put("eta", d.eta_s === null ? (d.files.pending ? "unknown" : "none left") : duration(d.eta_s));
  put("queued", d.queued);
  put("inflight", d.inflight);
  put("start-urls", d.start_urls);
  const bound = d.listing.bound;
  $("listing").className = d.listing.held_back ? "held" : "";
  put("listing", d.listing.held_back ? "held back (" + d.files.pending + " pending, bound "
    + bound + ")" : "not held back (" + (bound === null ? "no bound" : "bound " + bound) + ")");
  chart(d.throughput);
  put("nodes-alive", d.nodes_alive);
  put("nodes-gone", d.nodes_gone);
  nodes(d.node_rows);
  put("failures-count", d.failures.count);
  fill("failures", d.failures.first, d.failures.count);
  put("jobs-count", d.failed_jobs.count);
  fill("failed-jobs", d.failed_jobs.first, d.failed_jobs.count);
  put("rejected-count", d.rejected_entries.count);
  fill("rejected", d.rejected_entries.first, d.rejected_entries.count);
  put("reclaimed", d.reclaimed);
  put("dead", d.dead);
}

function connection(ok, text) {
  $("conn").className = "pill " + (ok ? "up" : "down");
  put("conn", text);
}

async function refresh() {
  try {
    const answer = await fetch("status.json", {cache: "no-store"});
    if (answer.ok) {
      render(await answer.json());
      connection(true, "live");
      put("updated", "updated " + new Date().toLocaleTimeString());
    } else {
      let why = "HTTP " + answer.status;
      try { why = (await answer.json()).error || why; } catch (e) { /* not JSON */ }
      connection(false, why);
    }
  } catch (e) {
    connection(false, "server unreachable");
  } finally {
    setTimeout(refresh, 2000);
  }
}
refresh();
</script>
</body>
</html>
"""
