// The connections view (`netlens conns --web`): api/connections every
// second, api/events since the last one seen.

const CONN_COLUMNS = [
  // key, header, text column, cell renderer
  ["comm", "process", true, (r) => esc(r.comm)],
  ["pid", "pid", false, (r) => r.pid || "-"],
  ["direction", "dir", true, (r) => esc(r.direction)],
  ["local", "local", true, (r) => esc(r.local)],
  ["remote", "remote", true, (r) => esc(r.remote)],
  ["age_s", "established", false, (r) => fmtAge(r.age_s)],
  ["bytes_sent", "bytes sent", false, (r) => fmtInt(r.bytes_sent)],
  ["bytes_received", "bytes received", false, (r) => fmtInt(r.bytes_received)],
  ["send_rate", "sent/s", false, (r) => fmtBytes(r.send_rate, "/s")],
  ["recv_rate", "received/s", false, (r) => fmtBytes(r.recv_rate, "/s")],
  ["packets_sent", "pkts out", false, (r) => fmtInt(r.packets_sent)],
  ["packets_received", "pkts in", false, (r) => fmtInt(r.packets_received)],
  ["retransmits", "retrans", false, (r) => fmtInt(r.retransmits)],
  ["rtt_us", "RTT µs", false, (r) => fmtInt(r.rtt_us)],
  ["rtt_var_us", "RTT var µs", false, (r) => fmtInt(r.rtt_var_us)],
  ["netns", "netns", false, (r) => r.netns],
  ["container", "container", true, (r) => r.container ? esc(shortContainer(r.container)) : "-"],
];

// `containerd://0123456789abcdef...` as `containerd 0123456789ab`, the
// 12 digits `docker ps` shows.
function shortContainer(id) {
  const [runtime, digits] = id.split("://");
  return `${runtime} ${digits.slice(0, 12)}`;
}
const TALKERS = 8;
const EVENTS_SHOWN = 200;

const conns = {
  snapshot: null,
  events: [],       // newest first
  nextSeq: 0,
  polled: false,    // events before the page's first poll are not "missed"
  missed: 0,        // events that came and went between two polls
  totals: null,
  sort: { key: "bytes_sent", desc: true },
  filter: "",
};

// The filter box: words separated by spaces, all must match; a number
// matches a port or a PID exactly, other words a part of the process name,
// of an address or of the container ID (case-insensitive).
function connMatches(r, words) {
  return words.every((w) => {
    if (/^\d+$/.test(w)) {
      const n = Number(w);
      return r.pid === n || portOf(r.local) === n || portOf(r.remote) === n;
    }
    return r.comm.toLowerCase().includes(w) || r.local.toLowerCase().includes(w) ||
      r.remote.toLowerCase().includes(w) || (r.container || "").includes(w);
  });
}

function portOf(endpoint) {
  return Number(endpoint.slice(endpoint.lastIndexOf(":") + 1));
}

function compareConns(key, desc) {
  const text = CONN_COLUMNS.find((c) => c[0] === key)[2];
  return (a, b) => {
    const x = a[key], y = b[key];
    let c;
    if (x == null || y == null) c = (x == null) - (y == null);   // unknown last
    else if (text) c = String(x).localeCompare(String(y), "en", { numeric: true });
    else c = x - y;
    if (desc && x != null && y != null) c = -c;
    return c || a.id - b.id;
  };
}

function renderConnTable() {
  const snap = conns.snapshot;
  const table = $("conns");
  if (!table.tHead.rows.length) {
    table.tHead.innerHTML = "<tr>" + CONN_COLUMNS.map(([key, label, text]) =>
      `<th data-key="${key}" class="${text ? "text" : ""}" scope="col" tabindex="0">` +
      `${esc(label)}</th>`).join("") + "</tr>";
  }
  for (const th of table.tHead.rows[0].cells) {
    if (th.dataset.key === conns.sort.key) {
      th.setAttribute("aria-sort", conns.sort.desc ? "descending" : "ascending");
    } else {
      th.removeAttribute("aria-sort");
    }
  }
  if (!snap) return;
  const words = conns.filter.toLowerCase().split(/\s+/).filter((w) => w);
  const rows = snap.connections.filter((r) => connMatches(r, words))
    .sort(compareConns(conns.sort.key, conns.sort.desc));
  table.tBodies[0].innerHTML = rows.map((r) => `<tr data-id="${r.id}">` +
    CONN_COLUMNS.map(([key, , text, cell]) =>
      `<td data-key="${key}"${text ? ' class="text"' : ""}` +
      `${r[key] == null ? "" : ` data-value="${esc(r[key])}"`}>${cell(r)}</td>`).join("") +
    "</tr>").join("");
  const capped = snap.connections_total > snap.connections.length ?
    ` (the ${snap.connections.length} busiest of ${snap.connections_total})` : "";
  $("conn-count").textContent = (words.length ? `${rows.length} shown of ` : "") +
    `${snap.connections.length}${capped}`;
}

// Bars of the highest total rates, by connection and by process.
function renderTalkers() {
  const snap = conns.snapshot;
  if (!snap) return;
  const rate = (r) => (r.send_rate || 0) + (r.recv_rate || 0);
  const byConn = snap.connections.filter((r) => rate(r) > 0).map((r) => ({
    label: `${r.comm} (${r.pid}) ${r.local} ${r.direction === "in" ? "\u2190" : "\u2192"} ${r.remote}`,
    sent: r.send_rate || 0, received: r.recv_rate || 0,
  }));
  const procs = new Map();
  for (const r of snap.connections) {
    if (rate(r) <= 0) continue;
    const key = r.pid + " " + r.comm;
    const p = procs.get(key) || { label: `${r.comm} (${r.pid})`, sent: 0, received: 0, n: 0 };
    p.sent += r.send_rate || 0;
    p.received += r.recv_rate || 0;
    p.n += 1;
    procs.set(key, p);
  }
  const byProc = [...procs.values()].map((p) => ({ ...p,
    label: `${p.label}, ${p.n} connection${p.n > 1 ? "s" : ""}` }));
  const waiting = snap.interval_s == null ? "rates after the next refresh" : "no traffic";
  bars($("talkers-conns"), byConn, waiting);
  bars($("talkers-procs"), byProc, waiting);
}

function bars(el, items, empty) {
  items.sort((a, b) => (b.sent + b.received) - (a.sent + a.received));
  const top = items.slice(0, TALKERS);
  if (!top.length) { el.innerHTML = `<p class="note">${esc(empty)}</p>`; return; }
  const max = top[0].sent + top[0].received;
  el.innerHTML = top.map((t) => {
    const total = t.sent + t.received;
    return `<div class="bar" title="${esc(t.label)}: sent ${esc(fmtBytes(t.sent, "/s"))}, ` +
      `received ${esc(fmtBytes(t.received, "/s"))}"><div class="label"><span>${esc(t.label)}</span>` +
      `<span>${fmtBytes(total, "/s")}</span></div><div class="track"><div class="fill" ` +
      `style="width:${(total * 100 / max).toFixed(1)}%"></div></div></div>`;
  }).join("");
}

function renderEvents() {
  const t = conns.totals;
  if (t) {
    $("event-counts").textContent = `(since start: ${t.connect} connect, ${t.accept} accept, ` +
      `${t.close} close, ${t.connect_failed} failed` +
      (conns.missed ? `; ${conns.missed} too many to list` : "") + ")";
  }
  const detail = (e) => e.reason ? e.reason : e.metrics ?
    `sent ${fmtInt(e.metrics.bytes_sent)} B, received ${fmtInt(e.metrics.bytes_received)} B, ` +
    `${e.metrics.retransmits} retrans` : "";
  $("events").tBodies[0].innerHTML = conns.events.map((e) =>
    `<tr class="ev-${esc(e.type)}" data-seq="${e.seq}"><td class="text">` +
    `${esc(e.time.slice(11, 23))}</td><td class="text kind">${esc(e.type)}</td>` +
    `<td class="text">${esc(e.comm)} (${e.pid})</td><td class="text">${esc(e.local)}</td>` +
    `<td class="text">${esc(e.remote)}</td><td class="text detail">${esc(detail(e))}</td></tr>`
  ).join("");
}

function renderLosses() {
  const snap = conns.snapshot;
  if (!snap) return;
  const l = snap.losses;
  const lost = l.events_lost + l.map_full + l.seed_map_full + l.seed_unreached + l.runs_missed;
  $("conns-losses").className = lost ? "warn" : "";
  $("conns-losses").textContent = " \u00b7 lost: " + (lost ? `${l.events_lost} events, ` +
    `${l.map_full} connections not tracked, ${l.seed_map_full + l.seed_unreached} existing ` +
    `connections not seeded, ${l.runs_missed} BPF runs skipped` +
    (l.hint ? ` (${l.hint})` : "") : "nothing");
}

function renderConns() {
  const snap = conns.snapshot;
  if (snap) {
    $("conns-status").textContent = `${snap.time} \u00b7 ${snap.connections_total} open ` +
      `connection${snap.connections_total === 1 ? "" : "s"}` +
      (snap.interval_s == null ? "" : ` \u00b7 rates over ${snap.interval_s.toFixed(1)} s`);
  }
  renderConnTable();
  renderTalkers();
  renderEvents();
  renderLosses();
}

async function pollConns() {
  const [snap, ev] = await Promise.all([getJson("api/connections"),
    getJson("api/events?since=" + conns.nextSeq)]);
  if (snap) conns.snapshot = snap;
  if (ev) {
    const last = ev.next_seq - 1;
    if (last < conns.nextSeq) conns.events = [];   // netlens was restarted
    // The server keeps the last 500: more than that between two polls
    // are not seen here.
    const first = ev.events.length ? ev.events[0].seq : last + 1;
    if (conns.polled && first > conns.nextSeq + 1) conns.missed += first - conns.nextSeq - 1;
    conns.polled = true;
    conns.nextSeq = last;
    conns.totals = ev.events_total;
    conns.events = ev.events.reverse().concat(conns.events).slice(0, EVENTS_SHOWN);
  }
  if (!paused()) renderConns();
  return 1000;
}

function setupConns() {
  $("conns").tHead.addEventListener("click", (ev) => {
    const th = ev.target.closest("th");
    if (!th) return;
    const key = th.dataset.key;
    if (conns.sort.key === key) {
      conns.sort.desc = !conns.sort.desc;
    } else {
      // Numbers start with the largest, text in alphabetical order.
      conns.sort = { key, desc: !CONN_COLUMNS.find((c) => c[0] === key)[2] };
    }
    renderConnTable();
  });
  $("conns").tHead.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); ev.target.click(); }
  });
  $("filter").addEventListener("input", (ev) => {
    conns.filter = ev.target.value;
    renderConnTable();
  });
  renderConnTable();
}
