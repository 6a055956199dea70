// What every dashboard page shares: calling the v1 API with the session,
// panels that refresh themselves (live, or every 10 s), dates in a time
// zone, tables built from text nodes (never HTML), and the charts.

const UI_HEADERS = { "X-Requested-With": "utterstream-ui", Accept: "application/json" };
export const FALLBACK_MS = 10000;

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && problem.detail) || `The API answered ${status}.`);
    this.status = status;
    this.problem = problem || {};
  }
}

export function url(path, params) {
  const query = new URLSearchParams(Object.entries(params || {}).filter(([, v]) => v != null));
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

async function answered(response) {
  if (response.status === 401) {
    // The session ended (signed out elsewhere, expired, key revoked).
    window.location.assign("/ui/sign-in");
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

export async function getJson(path, params) {
  return answered(await fetch(url(path, params), { headers: UI_HEADERS, credentials: "same-origin" }));
}

export async function postJson(path, body) {
  const init = { method: "POST", headers: { ...UI_HEADERS }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  return answered(await fetch(path, init));
}

// A panel's one refresh function: `load(root)` reads and draws, and returns
// the answer's as_of. A call while one runs is not lost: it runs once more after.
export function panel(id, load) {
  const root = document.getElementById(id);
  const status = root.querySelector(".status");
  let running = null;
  let again = false;
  async function run() {
    try {
      const asOf = await load(root);
      root.querySelector("[data-as-of]").textContent = asOfText(asOf);
      status.textContent = "";
      root.dataset.refreshedAt = String(Date.now());
    } catch (error) {
      status.textContent = error.message;
    }
  }
  return function refresh() {
    if (running) {
      again = true;
      return running;
    }
    running = run().then(async () => {
      while (again) {
        again = false;
        await run();
      }
      running = null;
    });
    return running;
  };
}

function asOfText(asOf) {
  // A read of the base tables (no dataflow): current as of the read.
  if (asOf === undefined) return new Date().toLocaleString();
  if (asOf === null) return "not yet: the dataflow has recorded no progress";
  return new Date(asOf).toLocaleString();
}

// Live updates: each event type re-runs the panels that show it. Until the
// stream is open, and whenever it fails, every panel refreshes every 10 s.
export function live(userId, byType) {
  const every = [...new Set(Object.values(byType).flat())];
  let timer = null;
  const poll = () => { timer = timer || setInterval(() => every.forEach((f) => f()), FALLBACK_MS); };
  const stopPolling = () => { clearInterval(timer); timer = null; };
  async function connect() {
    let ticket;
    try {
      ticket = (await postJson("/v1/live/tickets")).ticket;
    } catch (error) {
      poll();
      // No live endpoint on this server: polling it is.
      if (!(error instanceof ApiError && error.status === 404)) setTimeout(connect, 3 * FALLBACK_MS);
      return;
    }
    const stream = new EventSource(url("/v1/live", { ticket, user_id: userId }));
    stream.onopen = () => { stopPolling(); every.forEach((f) => f()); };
    for (const [type, refreshers] of Object.entries(byType)) {
      stream.addEventListener(type, () => refreshers.forEach((f) => f()));
    }
    stream.onerror = () => {
      // A ticket is single-use: reconnect with a new one, polling meanwhile.
      stream.close();
      poll();
      setTimeout(connect, FALLBACK_MS);
    };
  }
  poll();
  connect();
}

// ---- dates

export function browserZone() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
}

export function zones() {
  const all = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [];
  return [...new Set(["UTC", browserZone(), ...all])].sort();
}

// YYYY-MM-DD of `date` in `zone`.
export function localDate(zone, date = new Date()) {
  return new Intl.DateTimeFormat("en-CA", { timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit" }).format(date);
}

export function addDays(ymd, days) {
  const [y, m, d] = ymd.split("-").map(Number);
  return new Date(Date.UTC(y, m - 1, d + days)).toISOString().slice(0, 10);
}

export function monthsBack(ymd, months) {
  const [y, m] = ymd.split("-").map(Number);
  return new Date(Date.UTC(y, m - 1 - months, 1)).toISOString().slice(0, 10);
}

export function iso(ms) {
  return new Date(ms).toISOString();
}

export function timeLabel(zone, value, withDate = true) {
  const options = { timeZone: zone, hour: "2-digit", minute: "2-digit", hour12: false };
  if (withDate) Object.assign(options, { month: "short", day: "numeric" });
  return new Intl.DateTimeFormat(undefined, options).format(new Date(value));
}

// ---- tables

export function table(container, caption, columns, rows) {
  const t = document.createElement("table");
  t.createCaption().textContent = caption;
  const head = t.createTHead().insertRow();
  for (const column of columns) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = column.label;
    if (column.num) th.className = "num";
    head.appendChild(th);
  }
  const body = t.createTBody();
  for (const row of rows) {
    const tr = body.insertRow();
    columns.forEach((column, i) => {
      const td = tr.insertCell();
      td.textContent = row[i] ?? "";
      if (column.num) td.className = "num";
    });
  }
  container.replaceChildren(t);
}

// ---- charts (Chart.js, window.Chart, from /ui/vendor)

const PALETTE = ["#1f5fbf", "#d9730d", "#2e8540", "#a3261b", "#6f42c1", "#0f8b8d", "#b8860b", "#5a6570"];

export function draw(canvas, type, labels, datasets, extra = {}) {
  const colored = datasets.map((d, i) => ({
    backgroundColor: PALETTE[i % PALETTE.length],
    borderColor: PALETTE[i % PALETTE.length],
    ...d,
  }));
  const existing = window.Chart.getChart(canvas);
  if (existing) {
    existing.data.labels = labels;
    existing.data.datasets = colored;
    existing.update("none");
    return existing;
  }
  return new window.Chart(canvas, {
    type,
    data: { labels, datasets: colored },
    options: { responsive: true, maintainAspectRatio: false, animation: false, ...extra },
  });
}

// The error windows of an /errors answer as one stacked bar per window (every
// window of the range, empty ones too) and one dataset per category.
export function errorSeries(answer, zone) {
  const slots = errorSlots(answer, zone);
  const categories = [...new Set(answer.windows.flatMap((w) => w.counts.map((c) => c.category)))].sort();
  const sums = new Map(categories.map((c) => [c, new Array(slots.labels.length).fill(0)]));
  for (const w of answer.windows) {
    const i = slots.index(w.window_start);
    if (i === undefined) continue;
    for (const c of w.counts) sums.get(c.category)[i] += c.count;
  }
  return { labels: slots.labels, datasets: categories.map((c) => ({ label: c, data: sums.get(c) })) };
}

function errorSlots(answer, zone) {
  const step = { minute: 60000, hour: 3600000 }[answer.window];
  if (step) {
    const first = Date.parse(answer.from);
    const count = Math.round((Date.parse(answer.to) - first) / step);
    const labels = Array.from({ length: count }, (_, i) => timeLabel(zone, first + i * step, answer.window === "hour"));
    return { labels, index: (start) => Math.round((Date.parse(start) - first) / step) };
  }
  // Local days or months: step through the calendar dates of the answer's zone.
  const month = answer.window === "month";
  const keyOf = (start) => start.slice(0, month ? 7 : 10);
  const last = keyOf(answer.to);
  const keys = [];
  for (let d = answer.from.slice(0, 10); keyOf(d) < last; d = month ? monthsBack(d, -1) : addDays(d, 1)) {
    keys.push(keyOf(d));
  }
  const positions = new Map(keys.map((k, i) => [k, i]));
  return { labels: keys, index: (start) => positions.get(keyOf(start)) };
}

// Horizontal bars whose long labels are cut short, so a phone still shows the bars.
export function horizontalBars(canvas, labels, label, data) {
  const short = { callback(value) { const text = this.getLabelForValue(value); return text.length > 24 ? `${text.slice(0, 23)}…` : text; } };
  return draw(canvas, "bar", labels, [{ label, data }], {
    indexAxis: "y", plugins: { legend: { display: false } },
    scales: { x: { beginAtZero: true, ticks: { precision: 0 } }, y: { ticks: short } },
  });
}

export function stackedBars(canvas, series) {
  const stacked = { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } };
  return draw(canvas, "bar", series.labels, series.datasets, { scales: stacked });
}
