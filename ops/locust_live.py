"""Locust WebSocket scenario (`ops/loadtest --ws`): the earlier live
conversation service's load test against GET /v1/ws.

Each user is one learner with one conversation (created over REST on
start), holds one WebSocket (`client_id` its own) and every 1 to 3 s sends
an utterance with an Idempotency-Key, then waits for its `accepted` and for
the live `utterance` event of that utterance. Locust's table has, per
message type (request type WSS): `accepted` (send -> accepted) and `event`
(send -> its live event); a `problem`, a `busy`, a close or no answer
within 10 s is a failure.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import websocket
from locust import User, between, task
from locust.clients import HttpSession

ANSWER_TIMEOUT_S = 10.0


class LiveSocket(User):
    wait_time = between(1, 3)

    def on_start(self) -> None:
        key = self.environment.parsed_options.api_key
        self.auth = {"Authorization": f"Bearer {key}"}
        self.user_id = f"ws-{uuid.uuid4().hex[:10]}"
        http = HttpSession(
            base_url=self.host, request_event=self.environment.events.request, user=self
        )
        person = {"user_id": self.user_id, "email": f"{self.user_id}@example.com", "name": "Ws"}
        http.post("/v1/users", json=person, headers=self.auth, name="setup: POST /v1/users")
        r = http.post(
            "/v1/conversations",
            json={"user_id": self.user_id},
            headers=self.auth,
            name="setup: POST /v1/conversations",
        )
        self.conversation_id = r.json()["conversation_id"]
        url = self.host.replace("http", "ws", 1) + f"/v1/ws?client_id={self.user_id}"
        self.ws = websocket.create_connection(url, header=self.auth, timeout=ANSWER_TIMEOUT_S)

    def on_stop(self) -> None:
        self.ws.close()

    @task
    def utterance(self) -> None:
        key = uuid.uuid4().hex
        body = {
            "conversation_id": self.conversation_id,
            "user_id": self.user_id,
            "text": "Yesterday I goed to the market and buyed apples.",
            "timestamp": datetime.now(UTC).isoformat(),
            "errors": [{"category": "grammar", "subcategory": "past tense"}],
            "words_learned": 3,
        }
        sent = time.perf_counter()
        self.ws.send(json.dumps({"type": "utterance", "idempotency_key": key, "utterance": body}))
        self._await_answers(key, sent)

    def _await_answers(self, key: str, sent: float) -> None:
        utterance_id: str | None = None
        waiting = {"accepted", "event"}
        events_at: dict[str, float] = {}  # utterance_id -> when its event came
        while waiting and time.perf_counter() < sent + ANSWER_TIMEOUT_S:
            try:
                message = json.loads(self.ws.recv())
            except Exception as exc:  # closed or timed out: both answers fail
                for name in waiting:
                    self._record(name, sent, error=exc)
                return
            kind = message["type"]
            if kind in ("problem", "busy") and message.get("idempotency_key") == key:
                for name in waiting:
                    self._record(name, sent, error=RuntimeError(json.dumps(message)[:200]))
                return
            if kind == "accepted" and message.get("idempotency_key") == key:
                utterance_id = message["utterance_id"]
                self._record("accepted", sent)
                waiting.discard("accepted")
            elif kind == "event" and message["event"] == "utterance":
                events_at[message["data"]["utterance_id"]] = time.perf_counter()
            if "event" in waiting and utterance_id in events_at:
                # The event is published before the answer, so it often comes first.
                self._record("event", sent, at=events_at[utterance_id])
                waiting.discard("event")
        for name in waiting:
            self._record(name, sent, error=TimeoutError(f"no {name} within {ANSWER_TIMEOUT_S} s"))

    def _record(
        self, name: str, sent: float, at: float | None = None, error: Exception | None = None
    ) -> None:
        self.environment.events.request.fire(
            request_type="WSS",
            name=name,
            response_time=((at or time.perf_counter()) - sent) * 1000,
            response_length=0,
            exception=error,
            context={},
        )
