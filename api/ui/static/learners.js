// The learners page: the tenant's learners by id prefix, 50 a page.
import { getJson } from "./common.js";

const form = document.getElementById("learner-search");
const rows = document.getElementById("learner-rows");
const more = document.getElementById("more");
const status = document.querySelector(".status");
let next = null;
let prefix = "";

function row(user) {
  const tr = document.createElement("tr");
  const link = document.createElement("a");
  link.href = `/ui/learners/${encodeURIComponent(user.user_id)}`;
  link.textContent = user.user_id;
  tr.insertCell().append(link);
  for (const text of [user.name, user.email, user.created_at.slice(0, 10)]) tr.insertCell().textContent = text;
  return tr;
}

async function load(token) {
  try {
    const params = new URLSearchParams({ limit: "50" });
    if (prefix) params.set("prefix", prefix);
    if (token) params.set("page_token", token);
    const page = await getJson(`/v1/users?${params}`);
    if (!token) rows.replaceChildren();
    rows.append(...page.users.map(row));
    next = page.next_page_token;
    more.hidden = !next;
    status.textContent = rows.children.length ? "" : "No learner matches.";
  } catch (error) {
    status.textContent = error.message;
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  prefix = document.getElementById("prefix").value.trim();
  load(null);
});
more.addEventListener("click", () => next && load(next));
load(null);
