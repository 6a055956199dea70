// The learner page: error trend, top errors, words practised, insights and
// recent utterances, each a panel with one refresh function (common.js),
// re-run by live events or every 10 s.
import {
  addDays, draw, errorSeries, getJson, iso, live, localDate, monthsBack, panel,
  browserZone, horizontalBars, stackedBars, table, timeLabel, zones,
} from "./common.js";

const head = document.querySelector("[data-user-id]");
const userId = head.dataset.userId;
const base = `/v1/users/${encodeURIComponent(userId)}`;
const zoneSelect = document.getElementById("tz");
const zone = () => zoneSelect.value;
const HOUR = 3600000;

for (const name of zones()) zoneSelect.add(new Option(name, name, false, name === browserZone()));

async function read(root, path, params) {
  const answer = await getJson(path, params);
  // The exact read drawn, so anyone (and the browser tests) can compare.
  root.dataset.source = `${path}?${new URLSearchParams(params)}`;
  return answer;
}

function errorRange(window) {
  const now = Date.now();
  if (window === "minute") return { from: iso(now - HOUR), to: iso(now + 60000) };
  if (window === "hour") return { from: iso(now - 48 * HOUR), to: iso(now + HOUR) };
  const today = localDate(zone());
  return { from: addDays(today, -29), to: addDays(today, 1), tz: zone() };
}

const errors = panel("errors", async (root) => {
  const window = document.getElementById("errors-window").value;
  const answer = await read(root, `${base}/errors`, { window, ...errorRange(window), tz: zone() });
  const series = errorSeries(answer, zone());
  stackedBars(document.getElementById("errors-chart"), series);
  const rows = series.labels.map((label, i) => [label, ...series.datasets.map((d) => d.data[i])]);
  const columns = [{ label: "window" }, ...series.datasets.map((d) => ({ label: d.label, num: true }))];
  table(document.getElementById("errors-table"), "Errors per window and category", columns, rows);
  return answer.as_of;
});

const top = panel("top", async (root) => {
  const answer = await read(root, `${base}/errors/top`, { limit: "10" });
  const labels = answer.errors.map((e) => `${e.category} / ${e.subcategory}`);
  const counts = answer.errors.map((e) => e.count);
  horizontalBars(document.getElementById("top-chart"), labels, "errors", counts);
  const rows = answer.errors.map((e) => [e.category, e.subcategory, e.count]);
  const columns = [{ label: "category" }, { label: "subcategory" }, { label: "count", num: true }];
  table(document.getElementById("top-table"), "Most frequent errors", columns, rows);
  return answer.as_of;
});

function learningFrom(granularity, today) {
  if (granularity === "day") return addDays(today, -29);
  if (granularity === "week") return addDays(today, -7 * 11);
  return monthsBack(today, 11);
}

const learning = panel("learning", async (root) => {
  const granularity = document.getElementById("learning-granularity").value;
  const today = localDate(zone());
  const params = { granularity, from: learningFrom(granularity, today), to: addDays(today, 1), tz: zone() };
  const answer = await read(root, `${base}/learning`, params);
  const labels = answer.periods.map((p) => p.period_start.slice(0, 10));
  const words = answer.periods.map((p) => p.total_words);
  draw(document.getElementById("learning-chart"), "bar", labels, [{ label: "words practised", data: words }], {
    plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } },
  });
  const rows = answer.periods.map((p) => [p.period_start.slice(0, 10), p.entries, p.total_words, p.average_words]);
  const columns = [{ label: "from" }, { label: "utterances", num: true }, { label: "words", num: true }, { label: "average", num: true }];
  table(document.getElementById("learning-table"), `Words practised per ${granularity} (${answer.tz})`, columns, rows);
  return answer.as_of;
});

// Insights of the last 7 days: the chart and topics from up to 5 pages of
// 1,000, the list 10 at a time through the API's page tokens.
const INSIGHT_PAGES = 5;
let insightRange = null;
let listToken = null;

function insightParams(extra) {
  return { user_id: userId, from: insightRange.from, to: insightRange.to, ...extra };
}

const insights = panel("insights", async (root) => {
  const now = Date.now();
  insightRange = { from: iso(now - 7 * 24 * HOUR), to: iso(now + HOUR) };
  let answer = await read(root, "/v1/insights", insightParams({ limit: "1000" }));
  const asOf = answer.as_of;
  const all = [...answer.insights];
  for (let page = 1; page < INSIGHT_PAGES && answer.next_page_token; page++) {
    answer = await getJson("/v1/insights", insightParams({ limit: "1000", page_token: answer.next_page_token }));
    all.push(...answer.insights);
  }
  all.sort((a, b) => Date.parse(a.timestamp) - Date.parse(b.timestamp));
  draw(document.getElementById("sentiment-chart"), "line", all.map((i) => timeLabel(zone(), i.timestamp)),
    [{ label: "sentiment", data: all.map((i) => i.sentiment), pointRadius: 2 }],
    { plugins: { legend: { display: false } }, scales: { y: { min: -1, max: 1 } } });
  table(document.getElementById("sentiment-table"), "Sentiment of each utterance",
    [{ label: "time" }, { label: "sentiment", num: true }],
    all.map((i) => [timeLabel(zone(), i.timestamp), i.sentiment]));
  const topics = new Map();
  for (const i of all) for (const t of i.topics) topics.set(t, (topics.get(t) || 0) + 1);
  const ranked = [...topics].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).slice(0, 10);
  horizontalBars(document.getElementById("topics-chart"), ranked.map((t) => t[0]), "utterances", ranked.map((t) => t[1]));
  table(document.getElementById("topics-table"), "Topics", [{ label: "topic" }, { label: "utterances", num: true }], ranked);
  await listPage(null);
  return asOf;
});

async function listPage(token) {
  const answer = await getJson("/v1/insights", insightParams({ limit: "10", page_token: token }));
  listToken = answer.next_page_token;
  document.getElementById("insights-next").disabled = !listToken;
  const rows = answer.insights.map((i) => [timeLabel(zone(), i.timestamp), i.sentiment, i.topics.join(", "), i.confidence, i.reasoning]);
  const columns = [{ label: "time" }, { label: "sentiment", num: true }, { label: "topics" }, { label: "confidence", num: true }, { label: "reasoning" }];
  table(document.getElementById("insight-list"), "Insights, 10 a page", columns, rows);
}

// The utterances of the last 24 hours, newest first (up to 10 pages of 100).
const utterances = panel("utterances", async (root) => {
  const now = Date.now();
  const params = { from: iso(now - 24 * HOUR), to: iso(now + HOUR), limit: "100" };
  let answer = await read(root, `${base}/utterances`, params);
  const all = [...answer.utterances];
  for (let page = 1; page < 10 && answer.next_page_token; page++) {
    answer = await getJson(`${base}/utterances`, { ...params, page_token: answer.next_page_token });
    all.push(...answer.utterances);
  }
  document.getElementById("utterance-count").textContent = String(all.length);
  const items = all.slice(-20).reverse().map((u) => {
    const li = document.createElement("li");
    const when = document.createElement("time");
    when.dateTime = u.timestamp;
    when.textContent = timeLabel(zone(), u.timestamp);
    const meta = document.createElement("span");
    meta.className = "meta";
    const errs = u.errors.map((e) => `${e.category}/${e.subcategory}`).join(", ");
    meta.textContent = ` · ${u.status} · ${u.words_learned} words${errs ? ` · ${errs}` : ""}`;
    li.append(when, " ", document.createTextNode(u.text), meta);
    return li;
  });
  document.getElementById("utterance-list").replaceChildren(...items);
  return undefined;
});

document.getElementById("insights-first").addEventListener("click", () => listPage(null));
document.getElementById("insights-next").addEventListener("click", () => listToken && listPage(listToken));
document.getElementById("errors-window").addEventListener("change", errors);
document.getElementById("learning-granularity").addEventListener("change", learning);
zoneSelect.addEventListener("change", () => [errors, learning, insights, utterances].forEach((f) => f()));

for (const refresh of [errors, top, learning, insights, utterances]) refresh();
live(userId, {
  utterance: [utterances],
  errors: [errors, top],
  learning: [learning],
  insight: [insights],
});
