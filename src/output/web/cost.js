// The CPU cost view (`netlens cost --web`): api/history (JSON log objects,
// schema in the README) and the flame graph of api/flamegraph.svg.

const COST_HISTORY = 120;  // periods kept by the server (HISTORY)
const FLAME_REFRESH_MS = 5000;
const ENTRIES = {
  tx_syscall: "TX syscalls", rx_syscall: "RX syscalls", net_tx_softirq: "NET_TX softirq",
  net_rx_softirq: "NET_RX softirq", net_irq: "net hard IRQs", napi_thread: "NAPI threads",
  io_uring_worker: "io_uring workers", other_softirq: "other softirqs", other_irq: "other hard IRQs",
};
const CONTEXT = ["other_softirq", "other_irq"];
const STAT = ["user", "nice", "system", "iowait", "irq", "softirq", "steal", "idle"];
// Okabe-Ito, then Paul Tol's muted and light schemes: distinguishable with
// the common colour vision deficiencies.
const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442",
  "#332288", "#CC6677", "#117733", "#88CCEE", "#882255", "#44AA99", "#999933", "#AA4499",
  "#DDCC77", "#77AADD", "#EE8866", "#BBCC33", "#FFAABB", "#99DDFF", "#AAAA00", "#EEDD88",
  "#555555", "#AA3377"];
const STAT_COLORS = { user: "#0072B2", nice: "#56B4E9", system: "#D55E00", iowait: "#CC79A7",
  irq: "#E69F00", softirq: "#009E73", steal: "#332288", idle: "#E4E4E4" };

const cost = { history: [], cpu: "all", flameAt: 0 };

const pct = (ns, period) => period > 0 ? (ns * 100 / period).toFixed(2) + "%" : "-";

// Network entry names in the table's order (JSON objects keep none).
function networkEntries(r) {
  return Object.keys(ENTRIES).filter((k) => !CONTEXT.includes(k) && r.entries[k]);
}

// Sum of the per-CPU period_ns of several rows.
function addRows(rows, n) {
  const out = new Array(n).fill(0);
  for (const row of rows) row.forEach((v, i) => { out[i] += v; });
  return out;
}

function costStatusLine(r) {
  const s = r.sampling;
  let note = "sampling off";
  if (s.frequency > 0 || s.on_tick) {
    note = `sampling ${s.on_tick ? "at the tick" : s.frequency + " Hz"} ` +
      `(${Math.round(s.effective_hz)} Hz effective, ${s.net_rx_samples} NET_RX samples)` +
      (s.throttled ? " THROTTLED by the kernel" : "");
  }
  const lost = s.lost_total + s.stack_errors_total + r.self.bpf_runs_missed_total;
  return `${r.timestamp} \u00b7 period ${(r.period_ns / 1e9).toFixed(2)} s \u00b7 elapsed ` +
    `${(r.elapsed_ns / 1e9).toFixed(1)} s \u00b7 ${note}` +
    (lost > 0 ? ` \u00b7 lost: ${s.lost_total} samples, ${s.stack_errors_total} stacks, ` +
      `${r.self.bpf_runs_missed_total} BPF runs` : "");
}

// The table of the terminal: one row per entry, NET_RX category seen,
// network total, context entries, /proc/stat mode; a column per CPU, all
// CPUs, cumulative seconds.
function renderCostTable(r) {
  const n = r.cpus.length;
  $("cost-table").tHead.innerHTML = "<tr><th>% of CPU</th>" +
    r.cpus.map((c) => `<th>CPU${c}</th>`).join("") + "<th>all</th><th>total s</th></tr>";
  const rows = [];
  const row = (cls, label, period, total) => {
    const cells = period.map((ns) => `<td>${pct(ns, r.period_ns)}</td>`).join("");
    const tot = total ? (sum(total) / 1e9).toFixed(3) : "";
    rows.push(`<tr class="${cls}"><td>${esc(label)}</td>${cells}` +
      `<td>${pct(sum(period), r.period_ns * n)}</td><td>${tot}</td></tr>`);
  };
  const net = networkEntries(r);
  for (const name of net) {
    const e = r.entries[name];
    row("", ENTRIES[name] || name, e.period_ns, e.total_ns);
    if (name !== "net_rx_softirq") continue;
    for (const [cat, c] of Object.entries(r.net_rx_categories)) {
      if (sum(c.total_ns) > 0) row("sub", c.label || cat, c.period_ns, c.total_ns);
    }
  }
  row("total", "network total", addRows(net.map((k) => r.entries[k].period_ns), n),
    addRows(net.map((k) => r.entries[k].total_ns), n));
  for (const name of CONTEXT) {
    const e = r.entries[name];
    if (e) row("ctx", ENTRIES[name], e.period_ns, e.total_ns);
  }
  let first = true;
  for (const f of STAT) {
    const v = r.proc_stat_ns[f];
    if (!v || v.length !== n) continue;
    row(first ? "stat sep" : "stat", "/proc/stat " + f, v, null);
    first = false;
  }
  for (const p of r.pids) {
    rows.push(`<tr class="sep"><td colspan="${n + 3}">pid ${p.pid} (${esc(p.comm)})` +
      `${p.alive ? "" : " exited"}: user ${pct(p.user_ns, r.period_ns)}, system ` +
      `${pct(p.system_ns, r.period_ns)} of one CPU (TX syscalls ` +
      `${pct(p.tx_syscall_ns, r.period_ns)}, RX syscalls ${pct(p.rx_syscall_ns, r.period_ns)})` +
      `</td></tr>`);
  }
  const bpf = r.self.bpf_ns == null ? "not measured" :
    (r.self.bpf_estimated ? "~" : "") + pct(r.self.bpf_ns, r.period_ns);
  rows.push(`<tr class="sep"><td colspan="${n + 3}">netlens itself: BPF programs ${bpf}, ` +
    `process ${pct(r.self.process_ns, r.period_ns)} of one CPU</td></tr>`);
  $("cost-table").tBodies[0].innerHTML = rows.join("");
}

// Columns of the process and container tables: entries added up, as the
// terminal's table groups them.
const PROCESS_GROUPS = [
  ["TX syscalls", ["tx_syscall"]], ["RX syscalls", ["rx_syscall"]],
  ["interrupts in its context", ["net_tx_softirq", "net_rx_softirq", "net_irq"]],
  ["NAPI / io_uring workers", ["napi_thread", "io_uring_worker"]],
];

function groupCells(ns, period) {
  return PROCESS_GROUPS.map(([, keys]) =>
    `<td>${pct(sum(keys.map((k) => ns[k] || 0)), period)}</td>`).join("");
}

// The processes with the most network time in the period (--top of the
// command, 50 in the agent), and every container with network time.
function renderProcessTables(r) {
  const p = r.processes;
  $("processes-panel").hidden = !(p && p.enabled);
  if (!p || !p.enabled) return;
  const heads = PROCESS_GROUPS.map(([label]) => `<th>${esc(label)}</th>`).join("");
  $("process-table").tHead.innerHTML = `<tr><th class="text">PID</th><th class="text">command</th>` +
    `<th class="text">container</th>${heads}<th>network</th><th>total s</th></tr>`;
  $("process-table").tBodies[0].innerHTML = p.top.map((t) =>
    `<tr data-pid="${t.pid}"><td class="text">${t.pid}</td><td class="text">${esc(t.comm)}` +
    `${t.alive ? "" : " (exited)"}</td>` +
    `<td class="text" title="${esc(t.cgroup || "")}">` +
    `${t.container_id ? esc(t.container_id.replace(/:\/\/(.{12}).*/, ":$1")) : "-"}</td>` +
    `${groupCells(t.ns, r.period_ns)}<td>${pct(t.network_ns, r.period_ns)}</td>` +
    `<td>${(t.network_ns_total / 1e9).toFixed(3)}</td></tr>`).join("");
  $("container-table").tHead.innerHTML = `<tr><th class="text">container</th>` +
    `<th class="text">pod UID</th><th>processes</th>${heads}<th>network</th>` +
    `<th>total s</th></tr>`;
  $("container-table").tBodies[0].innerHTML = p.containers.map((c) =>
    `<tr><td class="text">${c.container_id ? esc(c.container_id) : "(host)"}</td>` +
    `<td class="text">${esc(c.pod_uid || "")}</td><td>${c.processes}</td>` +
    `${groupCells(c.ns, r.period_ns)}<td>${pct(c.network_ns, r.period_ns)}</td>` +
    `<td>${(c.network_ns_total / 1e9).toFixed(3)}</td></tr>`).join("");
  const lost = sum(Object.values(p.unattributed_ns_total));
  $("processes-note").textContent = `${p.tracked} processes held in the kernel (at most ` +
    `${p.capacity})` + (lost > 0 ? `; ${(lost / 1e9).toFixed(3)} s of network time on no ` +
    `process: the table was full (raise --max-processes)` : "");
}

// % of the chosen CPU (or of all CPUs together) that `perCpu` is in report r.
function share(r, perCpu) {
  if (!perCpu || perCpu.length === 0 || r.period_ns === 0) return 0;
  if (cost.cpu === "all") return sum(perCpu) * 100 / (r.period_ns * perCpu.length);
  const i = r.cpus.indexOf(Number(cost.cpu));
  return i < 0 ? 0 : perCpu[i] * 100 / r.period_ns;
}

// Tick spacing of the time axis: the smallest of 1-2-5 steps that leaves
// at least `minGap` pixels between labels.
function timeStep(windowS, plotW, minGap) {
  for (const m of [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600]) {
    if (m * plotW / windowS >= minGap) return m;
  }
  return 3600;
}

// A stacked bar per period on a time axis: the right edge is the end of
// the latest period ("now"), the left edge COST_HISTORY periods earlier;
// a bar covers its period's own time span. series: [{name, color, values}]
// with one value (in %) per period of the history.
function stackedChart(el, series, fixedMax, empty) {
  const h = cost.history;
  const shown = series.filter((s) => s.values.some((v) => v > 0));
  if (h.length === 0 || shown.length === 0) {
    el.innerHTML = `<p class="note">${esc(empty)}</p>`;
    return;
  }
  const W = Math.max(300, Math.round(el.clientWidth || 600)), H = 200, L = 48, T = 8, B = 20;
  const last = h[h.length - 1];
  const windowNs = COST_HISTORY * last.period_ns;
  const plotW = W - L;
  // x of the time `agoNs` before the end of the latest period.
  const x = (agoNs) => W - agoNs * plotW / windowNs;
  const totals = h.map((_, i) => sum(shown.map((s) => s.values[i])));
  let max = fixedMax || Math.max(...totals);
  if (!fixedMax) {   // a round top: 1, 2 or 5 times a power of ten
    const p = Math.pow(10, Math.floor(Math.log10(max)));
    max = [1, 2, 5, 10].map((m) => m * p).find((m) => m >= max);
  }
  const y = (v) => T + (H - T - B) * (1 - v / max);
  const parts = [];
  for (const f of [0, 0.5, 1]) {
    parts.push(`<line x1="${L}" x2="${W}" y1="${y(max * f)}" y2="${y(max * f)}" stroke="#ccc"/>` +
      `<text x="${L - 4}" y="${y(max * f) + 4}" text-anchor="end" font-size="11">` +
      `${+(max * f).toFixed(3)}%</text>`);
  }
  h.forEach((r, i) => {
    const right = x(last.timestamp_ns - r.timestamp_ns);
    const left = Math.max(L, right - r.period_ns * plotW / windowNs);
    if (right <= L) return;
    const bw = Math.max(1, (right - left) * 0.85);
    let acc = 0;
    for (const s of shown) {
      const v = s.values[i];
      if (v <= 0) continue;
      const top = y(acc + v), hh = y(acc) - top;
      acc += v;
      parts.push(`<rect x="${left.toFixed(1)}" y="${top.toFixed(1)}" width="${bw.toFixed(1)}" ` +
        `height="${hh.toFixed(1)}" fill="${s.color}"><title>${esc(r.timestamp)} ` +
        `${esc(s.name)}: ${v.toFixed(2)}%</title></rect>`);
    }
  });
  const windowS = windowNs / 1e9;
  const step = timeStep(windowS, plotW, 60);
  for (let ago = 0; ago <= windowS + 1e-9; ago += step) {
    const tx = x(ago * 1e9);
    const anchor = ago === 0 ? "end" : tx - L < 30 ? "start" : "middle";
    parts.push(`<line x1="${tx}" x2="${tx}" y1="${H - B}" y2="${H - B + 4}" stroke="#888"/>` +
      `<text class="tick" data-ago-s="${ago}" x="${tx.toFixed(1)}" y="${H - 4}" font-size="11" ` +
      `text-anchor="${anchor}">${ago === 0 ? "now" : ago + " s ago"}</text>`);
  }
  const legend = shown.map((s) => `<span style="--c:${s.color}">${esc(s.name)}</span>`).join("");
  el.innerHTML = `<svg viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" ` +
    `data-window-s="${windowS}" aria-label="stacked bars, % of CPU per period">` +
    `${parts.join("")}</svg><div class="legend">${legend}</div>`;
}

function renderCharts() {
  const h = cost.history;
  const last = h[h.length - 1];
  stackedChart($("chart-stat"), STAT.map((f) => ({
    name: f, color: STAT_COLORS[f],
    values: h.map((r) => share(r, r.proc_stat_ns[f])),
  })), 100, "/proc/stat is not readable");
  stackedChart($("chart-net"), networkEntries(last).map((name, i) => ({
    name: ENTRIES[name] || name, color: PALETTE[i % PALETTE.length],
    values: h.map((r) => share(r, r.entries[name] && r.entries[name].period_ns)),
  })), 0, "no kernel networking time yet");
  const sampling = last.sampling.frequency > 0 || last.sampling.on_tick;
  stackedChart($("chart-rx"), Object.keys(last.net_rx_categories).map((cat, i) => ({
    name: last.net_rx_categories[cat].label || cat, color: PALETTE[i % PALETTE.length],
    values: h.map((r) => share(r, r.net_rx_categories[cat] &&
      r.net_rx_categories[cat].period_ns)),
  })), 0, sampling ? "no NET_RX time sampled yet" : "sampling is off (-f 0): no NET_RX breakdown");
}

function updateCpuChoices(r) {
  const sel = $("cpu");
  if (sel.options.length === r.cpus.length + 1) return;
  sel.innerHTML = `<option value="all">all CPUs</option>` +
    r.cpus.map((c) => `<option value="${c}">CPU${c}</option>`).join("");
  sel.value = cost.cpu;
}

// The flame graph is reloaded every few seconds only: a reload resets the
// zoom the user chose in it. Never while its view is hidden: the graph
// sizes itself to its frame when it loads, and a hidden frame has no width.
function refreshFlame() {
  const now = Date.now();
  if ($("view-cost").hidden) return;
  if (now - cost.flameAt < FLAME_REFRESH_MS) return;
  cost.flameAt = now;
  $("flame").src = "api/flamegraph.svg?t=" + now;
}

function renderCost() {
  const h = cost.history;
  if (h.length === 0) return;
  const r = h[h.length - 1];
  $("cost-status").textContent = costStatusLine(r);
  updateCpuChoices(r);
  renderCostTable(r);
  renderProcessTables(r);
  renderCharts();
  refreshFlame();
}

async function pollCost() {
  const h = cost.history;
  const since = h.length ? "?since=" + h[h.length - 1].timestamp_ns : "";
  const fresh = await getJson("api/history" + since) || [];
  cost.history = h.concat(fresh).slice(-COST_HISTORY);
  if (fresh.length && !paused()) renderCost();
  const last = cost.history[cost.history.length - 1];
  return last ? Math.max(250, last.period_ns / 1e6) : 500;
}

function setupCost() {
  $("cpu").addEventListener("change", (ev) => { cost.cpu = ev.target.value; renderCost(); });
  // The flame graph's own height, once it is drawn (the same origin lets
  // the page read it).
  $("flame").addEventListener("load", () => {
    const svg = $("flame").contentDocument && $("flame").contentDocument.documentElement;
    const height = svg && Number(svg.getAttribute("height"));
    if (height > 0) $("flame").style.height = height + "px";
  });
}
