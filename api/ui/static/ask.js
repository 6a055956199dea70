// The Ask page: a question to POST /v1/ask; shows the plan, its explanation,
// the equivalent GET and the answer, drawn by the shape of its data.
import { ApiError, browserZone, draw, errorSeries, horizontalBars, postJson, stackedBars, table, timeLabel } from "./common.js";

const form = document.getElementById("ask-form");
const status = document.querySelector(".status");
const section = document.getElementById("answer");
const canvas = document.getElementById("answer-chart");
const tableBox = document.getElementById("answer-table");
const zone = browserZone();

function show(answer) {
  document.getElementById("explanation").textContent = answer.explanation;
  document.getElementById("get-url").textContent = answer.url;
  document.getElementById("answered-by").textContent = answer.answered_by ? `(answered by ${answer.answered_by})` : "";
  document.getElementById("plan").textContent = JSON.stringify(answer.plan, null, 2);
  const drawn = drawData(answer.data || {});
  canvas.parentElement.hidden = !drawn;
  section.hidden = false;
}

// Draws what the served reads answer; returns whether there was a chart.
function drawData(data) {
  if (Array.isArray(data.windows)) {
    const series = errorSeries(data, data.tz || zone);
    stackedBars(canvas, series);
    table(tableBox, "Errors per window and category",
      [{ label: "window" }, ...series.datasets.map((d) => ({ label: d.label, num: true }))],
      series.labels.map((label, i) => [label, ...series.datasets.map((d) => d.data[i])]));
    return true;
  }
  if (Array.isArray(data.periods)) {
    draw(canvas, "bar", data.periods.map((p) => p.period_start.slice(0, 10)), [{ label: "words practised", data: data.periods.map((p) => p.total_words) }]);
    table(tableBox, "Words practised", [{ label: "from" }, { label: "utterances", num: true }, { label: "words", num: true }],
      data.periods.map((p) => [p.period_start.slice(0, 10), p.entries, p.total_words]));
    return true;
  }
  if (Array.isArray(data.errors)) {
    horizontalBars(canvas, data.errors.map((e) => `${e.category} / ${e.subcategory}`), "errors", data.errors.map((e) => e.count));
    table(tableBox, "Most frequent errors", [{ label: "category" }, { label: "subcategory" }, { label: "count", num: true }],
      data.errors.map((e) => [e.category, e.subcategory, e.count]));
    return true;
  }
  if (Array.isArray(data.insights)) {
    table(tableBox, "Insights", [{ label: "time" }, { label: "learner" }, { label: "sentiment", num: true }, { label: "topics" }],
      data.insights.map((i) => [timeLabel(zone, i.timestamp), i.user_id, i.sentiment, i.topics.join(", ")]));
    return false;
  }
  const rows = Object.entries(data).map(([k, v]) => [k, typeof v === "object" ? JSON.stringify(v) : v]);
  table(tableBox, "Answer", [{ label: "field" }, { label: "value" }], rows);
  return false;
}

// A refused or unclear question is a 422 whose detail already says why;
// a clarification also names what to add.
function refusal(error) {
  const missing = error.problem.clarify && error.problem.clarify.missing;
  return missing && missing.length ? `${error.message} (missing: ${missing.join(", ")})` : error.message;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const question = document.getElementById("question").value.trim();
  if (!question) return;
  status.textContent = "Asking…";
  section.hidden = true;
  try {
    show(await postJson("/v1/ask", { question, tz: zone, dry_run: false }));
    status.textContent = "";
  } catch (error) {
    status.textContent = error instanceof ApiError ? refusal(error) : error.message;
  }
});
