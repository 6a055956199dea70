"""Locust load test: clients that behave like utterstream's real ones.

Run it with `ops/loadtest --users N --duration 60s --p95-budget-ms M`, which
passes the API key and prints Locust's table; the run fails (exit 1) when
more than --max-failure-ratio of requests failed or the overall p95 is over
--p95-budget-ms.

- `AppBackend` (most users): a learning app's back end. Each user is one
  learner in one conversation (created on start, with ids that make a
  restart a no-op). It posts utterances with an Idempotency-Key and an
  explicit utterance_id, now and then sends the very same request again
  (a retry after a lost answer, which must come back as a replay), and
  sometimes posts a batch. A 429 or 503 is waited out (Retry-After) and
  retried with the same key, as the docs tell clients to.
- `Dashboard`: a teacher's screen reading utterances the apps just posted,
  and the learner's errors, top errors, learning and insights, for those of
  these endpoints that the API has (checked once at start).
"""

from __future__ import annotations

import itertools
import json
import random
import sys
import time
import uuid
from collections import deque
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from locust import FastHttpUser, between, events, task

RUN = uuid.uuid4().hex[:8]
LEARNERS = 40
RECENT: deque[tuple[str, str]] = deque(maxlen=2000)  # (utterance_id, user_id) posted lately
OPTIONAL = {
    "errors": "/v1/users/{user_id}/errors",
    "top": "/v1/users/{user_id}/errors/top",
    "learning": "/v1/users/{user_id}/learning",
    "insights": "/v1/insights",
}
AVAILABLE: set[str] = set()
VERDICT: list[str] = []
NEXT_LEARNER = itertools.count()
SENTENCES = [
    "Yesterday I goed to the market and buyed apples.",
    "She don't like the new teacher very much.",
    "I am interested on learning more about history.",
    "We arrived to the station late because of the rain.",
    "Can you borrow me your umbrella tomorrow?",
    "I usually take the bus to work.",
]
MISTAKES = [
    {"category": "grammar", "subcategory": "past tense"},
    {"category": "grammar", "subcategory": "subject-verb agreement"},
    {"category": "grammar", "subcategory": "prepositions"},
    {"category": "vocabulary", "subcategory": "word choice"},
]


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--api-key", env_var="UTTERSTREAM_API_KEY", default="", help="API key")
    parser.add_argument("--p95-budget-ms", type=float, default=0.0, help="fail above this p95")
    parser.add_argument("--max-failure-ratio", type=float, default=0.01, help="fail above this")


@events.test_start.add_listener
def _discover(environment, **_kwargs) -> None:
    """Which optional read endpoints the API has: from its OpenAPI document,
    or, when that cannot be read, by asking each once (a missing route is a
    404; an existing one answers 200 or names a bad parameter)."""
    import httpx

    headers = {"Authorization": f"Bearer {environment.parsed_options.api_key}"}
    try:
        paths = httpx.get(environment.host + "/schema/openapi.json", timeout=10).json()["paths"]
    except (httpx.HTTPError, ValueError, KeyError):
        paths = None
    for name, path in OPTIONAL.items():
        if paths is not None:
            found = path in paths or path + "/" in paths
        else:
            url = environment.host + path.format(user_id=f"lt-{RUN}-probe")
            try:
                found = httpx.get(url, headers=headers, timeout=10).status_code in (200, 400, 422)
            except httpx.HTTPError:
                found = False
        if found:
            AVAILABLE.add(name)


@events.quitting.add_listener
def _verdict(environment, **_kwargs) -> None:
    stats = environment.stats.total
    options = environment.parsed_options
    p95 = stats.get_response_time_percentile(0.95) if stats.num_requests else 0
    problems = []
    if stats.num_requests == 0:
        problems.append("no request was made")
    if stats.fail_ratio > options.max_failure_ratio:
        problems.append(f"failure ratio {stats.fail_ratio:.2%} > {options.max_failure_ratio:.2%}")
    if options.p95_budget_ms and p95 > options.p95_budget_ms:
        problems.append(f"p95 {p95:.0f} ms > budget {options.p95_budget_ms:.0f} ms")
    verdict = "FAIL: " + "; ".join(problems) if problems else "PASS"
    reads = ", ".join(sorted(AVAILABLE)) or "utterances only"
    VERDICT.append(
        f"loadtest {verdict} (requests {stats.num_requests}, failures {stats.num_failures} "
        f"= {stats.fail_ratio:.2%}, p95 {p95:.0f} ms, budget {options.p95_budget_ms:.0f} ms; "
        f"dashboards read: {reads})"
    )
    # Set either way: Locust's default is 1 on any failure at all.
    environment.process_exit_code = 1 if problems else 0


@events.quit.add_listener
def _say_verdict(**_kwargs) -> None:
    # After Locust's own table, on the same stream.
    for line in VERDICT:
        sys.stderr.write(f"\n{line}\n")


class Client(FastHttpUser):
    abstract = True

    def on_start(self) -> None:
        self.auth = {"Authorization": f"Bearer {self.environment.parsed_options.api_key}"}

    def send(self, method: str, path: str, name: str, body: object = None, key: str | None = None):
        """One request; 429, 503 and 409 "still in flight" are retried after
        Retry-After with the same key. Each attempt is counted; 429 and 503
        count as failures (the load test's key should not be limited), a
        409 in flight does not (it is the protocol working)."""
        headers = dict(self.auth)
        if key:
            headers["Idempotency-Key"] = key
        data = json.dumps(body) if body is not None else None
        if data:
            headers["Content-Type"] = "application/json"
        deadline = time.monotonic() + 30
        while True:
            with self.client.request(
                method, path, name=name, data=data, headers=headers, catch_response=True
            ) as r:
                in_flight = r.status_code == 409 and "request-in-flight" in (r.text or "")
                retry = in_flight or r.status_code in (429, 503)
                if r.status_code >= 400 and not in_flight:
                    r.failure(f"HTTP {r.status_code}: {(r.text or '')[:120]}")
                else:
                    r.success()
            if not retry or time.monotonic() > deadline:
                return r
            time.sleep(float(r.headers.get("Retry-After") or 1))


class AppBackend(Client):
    weight = 5
    wait_time = between(0.05, 0.5)

    def on_start(self) -> None:
        super().on_start()
        n = next(NEXT_LEARNER) % LEARNERS
        self.user_id = f"lt-{RUN}-learner-{n}"
        self.conversation_id = f"lt-{RUN}-conv-{n}"
        user = {"user_id": self.user_id, "email": f"{self.user_id}@load.invalid", "name": "Load"}
        self.send("POST", "/v1/users", "POST /v1/users", user, f"{self.user_id}-create")
        conversation = {"user_id": self.user_id, "conversation_id": self.conversation_id}
        self.send(
            "POST",
            "/v1/conversations",
            "POST /v1/conversations",
            conversation,
            f"{self.conversation_id}-create",
        )

    def utterance(self) -> dict:
        return {
            "utterance_id": f"lt-{RUN}-{uuid.uuid4().hex}",
            "user_id": self.user_id,
            "conversation_id": self.conversation_id,
            "text": random.choice(SENTENCES),
            "timestamp": datetime.now(UTC).isoformat(),
            "errors": random.sample(MISTAKES, random.randint(0, 2)),
            "words_learned": random.randint(0, 6),
        }

    @task(20)
    def post_utterance(self) -> None:
        body, key = self.utterance(), str(uuid.uuid4())
        r = self.send("POST", "/v1/utterances", "POST /v1/utterances", body, key)
        if r.status_code == 202:
            RECENT.append((body["utterance_id"], self.user_id))
            if random.random() < 0.05:  # the answer was "lost": send it again
                with self.client.request(
                    "POST",
                    "/v1/utterances",
                    name="POST /v1/utterances (retry, same key)",
                    data=json.dumps(body),
                    headers={
                        **self.auth,
                        "Idempotency-Key": key,
                        "Content-Type": "application/json",
                    },
                    catch_response=True,
                ) as again:
                    if (
                        again.status_code != 202
                        or again.headers.get("Idempotent-Replayed") != "true"
                    ):
                        again.failure(f"expected a replay, got HTTP {again.status_code}")

    @task(1)
    def post_batch(self) -> None:
        items = [self.utterance() for _ in range(random.randint(20, 100))]
        r = self.send(
            "POST",
            "/v1/utterances/batch",
            "POST /v1/utterances/batch",
            {"utterances": items},
            str(uuid.uuid4()),
        )
        if r.status_code == 202:
            RECENT.extend((i["utterance_id"], self.user_id) for i in items[:5])


class Dashboard(Client):
    weight = 2
    wait_time = between(0.5, 2.0)

    def recent(self) -> tuple[str, str] | None:
        return random.choice(RECENT) if RECENT else None

    @task(6)
    def read_utterance(self) -> None:
        if (found := self.recent()) is not None:
            self.send("GET", f"/v1/utterances/{found[0]}", "GET /v1/utterances/{id}")

    @task(2)
    def read_errors(self) -> None:
        if "errors" in AVAILABLE and (found := self.recent()):
            now = datetime.now(UTC).replace(microsecond=0)
            span = (
                f"from={quote((now - timedelta(hours=6)).isoformat())}&to={quote(now.isoformat())}"
            )
            path = f"/v1/users/{found[1]}/errors?window=minute&{span}"
            self.send("GET", path, "GET /v1/users/{id}/errors")

    @task(1)
    def read_top_errors(self) -> None:
        if "top" in AVAILABLE and (found := self.recent()):
            self.send("GET", f"/v1/users/{found[1]}/errors/top", "GET /v1/users/{id}/errors/top")

    @task(2)
    def read_learning(self) -> None:
        if "learning" in AVAILABLE and (found := self.recent()):
            today = datetime.now(UTC).date()
            path = (
                f"/v1/users/{found[1]}/learning?granularity=day"
                f"&from={today - timedelta(days=6)}&to={today + timedelta(days=1)}&tz=Asia/Kolkata"
            )
            self.send("GET", path, "GET /v1/users/{id}/learning")

    @task(1)
    def read_insights(self) -> None:
        if "insights" in AVAILABLE:
            now = datetime.now(UTC).replace(microsecond=0)
            path = (
                f"/v1/insights?from={quote((now - timedelta(hours=1)).isoformat())}"
                f"&to={quote(now.isoformat())}&limit=50"
            )
            self.send("GET", path, "GET /v1/insights")
