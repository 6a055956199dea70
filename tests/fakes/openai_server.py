"""A local server speaking OpenAI's chat-completions API, with scripted faults.

Real sockets on 127.0.0.1, so the real `openai` client, its HTTP stack and
its timeouts are what the tests exercise. Each call's behaviour comes from a
script (a FIFO that `script()` fills) and, once that is empty, from a policy
`(call_index, request_body) -> Behaviour`; the default policy answers validly.
Valid answers are computed by the offline analyzer, so different utterances
get different, sensible insights.

Every chat-completion request is recorded (arrival time on `time.monotonic()`,
body and the behaviour served) so a test can check the call rate the server saw.

Standalone, for integration tests of the dataflow:

    python -m tests.fakes.openai_server --port 8911 --fault-mix 0.33 --seed 7

where about a third of the calls misbehave in one of the ways in FAULT_MIX,
the same ways for the same seed and call order.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, Self

import msgspec
import structlog

from llm.offline import OfflineAnalyzer
from runtime.logs import configure_logging
from runtime.settings import Settings

log = structlog.get_logger(__name__)

Kind = Literal[
    "valid",  # the JSON object asked for
    "fenced",  # that object in a ```json fence
    "prose_json",  # that object with chatter before and after it
    "prose",  # no JSON at all
    "out_of_range",  # sentiment and confidence outside their ranges
    "rate_limit",  # 429 with Retry-After and/or retry-after-ms
    "server_error",  # 500
    "unavailable",  # 503
    "hang",  # no answer until hang_s has passed, then a closed socket
    "drop",  # the socket closed without a response
    "reject_json_mode",  # 400 if response_format is sent, else valid
    "bad_request",  # 400 whatever is sent
    "unauthorized",  # 401
]


class Behaviour(msgspec.Struct, frozen=True):
    kind: Kind
    # For "rate_limit": the Retry-After header in whole seconds, as HTTP has
    # it, and OpenAI's finer retry-after-ms.
    retry_after_s: int | None = None
    retry_after_ms: int | None = None
    # For "valid": this exact reply text instead of an analysis (other prompts).
    content: str | None = None
    # For "valid": a call of this tool with these raw JSON arguments instead
    # of a text reply (POST /v1/ask's planner).
    tool: str | None = None
    arguments: str = "{}"


class Arrival(msgspec.Struct, frozen=True):
    at: float
    body: dict[str, Any]
    kind: Kind


Policy = Callable[[int, dict[str, Any]], Behaviour]

VALID = Behaviour("valid")
FAULT_MIX: tuple[Behaviour, ...] = (
    Behaviour("fenced"),
    Behaviour("prose_json"),
    Behaviour("prose"),
    Behaviour("out_of_range"),
    Behaviour("rate_limit", retry_after_s=1, retry_after_ms=200),
    Behaviour("server_error"),
    Behaviour("unavailable"),
    Behaviour("hang"),
    Behaviour("drop"),
    Behaviour("reject_json_mode"),
)


def always_valid(_index: int, _body: dict[str, Any]) -> Behaviour:
    return VALID


def mix_policy(fault_share: float, seed: int) -> Policy:
    """About `fault_share` of calls get one of FAULT_MIX, chosen by a
    generator seeded with (seed, call index): the same for every run."""

    def policy(index: int, _body: dict[str, Any]) -> Behaviour:
        draw = random.Random(f"{seed}:{index}")
        return draw.choice(FAULT_MIX) if draw.random() < fault_share else VALID

    return policy


class FakeOpenAI:
    """The server, run on a background thread by `start()` or `with`."""

    def __init__(
        self,
        *,
        policy: Policy = always_valid,
        hang_s: float = 60.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._policy = policy
        self.hang_s = hang_s
        self._script: deque[Behaviour] = deque()
        self._arrivals: list[Arrival] = []
        self._calls = itertools.count()
        self._lock = threading.Lock()
        # Set on stop, so hanging handlers give up instead of outliving the test.
        self.stopping = threading.Event()
        self._httpd = _Server((host, port), _Handler, fake=self)
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def arrivals(self) -> list[Arrival]:
        with self._lock:
            return list(self._arrivals)

    def script(self, *behaviours: Behaviour | Kind) -> None:
        """Queue behaviours for the next calls, in order, before the policy."""
        with self._lock:
            self._script.extend(b if isinstance(b, Behaviour) else Behaviour(b) for b in behaviours)

    def start(self) -> Self:
        # A short poll interval: stop() returns within 50 ms, not 500.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def next_behaviour(self, body: dict[str, Any]) -> Behaviour:
        """Record one call's arrival and decide how to answer it."""
        at = time.monotonic()
        with self._lock:
            index = next(self._calls)
            behaviour = self._script.popleft() if self._script else self._policy(index, body)
            self._arrivals.append(Arrival(at=at, body=body, kind=behaviour.kind))
        return behaviour


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type, *, fake: FakeOpenAI) -> None:
        super().__init__(address, handler)
        self.fake = fake

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up is what the faults are for,
        # not a server error worth a traceback.
        if isinstance(sys.exception(), ConnectionError):
            log.debug("fake_openai.client_gone", client=client_address)
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    # Headers and body go out in separate writes; with Nagle's algorithm on,
    # the client's delayed ACK holds the body back ~40 ms.
    disable_nagle_algorithm = True
    # Idle keep-alive connections end, so their threads do too.
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("fake_openai.request", line=format % args)

    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/v1/models":
            self._error(HTTPStatus.NOT_FOUND, "Unknown path", "invalid_request_error")
            return
        model = {"id": "fake-model", "object": "model", "created": 0, "owned_by": "utterstream"}
        self._json(HTTPStatus.OK, {"object": "list", "data": [model]})

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._error(HTTPStatus.NOT_FOUND, "Unknown path", "invalid_request_error")
            return
        length = int(self.headers.get("Content-Length", 0))
        try:
            body = msgspec.json.decode(self.rfile.read(length))
        except msgspec.DecodeError:
            self._error(HTTPStatus.BAD_REQUEST, "Body is not JSON", "invalid_request_error")
            return
        fake = self.server.fake
        behaviour = fake.next_behaviour(body)
        match behaviour.kind:
            case "hang":
                fake.stopping.wait(fake.hang_s)
                self.close_connection = True
            case "drop":
                self.close_connection = True
            case "rate_limit":
                self._rate_limited(behaviour)
            case "server_error":
                self._error(
                    HTTPStatus.INTERNAL_SERVER_ERROR, "The server had an error", "server_error"
                )
            case "unavailable":
                self._error(
                    HTTPStatus.SERVICE_UNAVAILABLE, "The engine is overloaded", "server_error"
                )
            case "unauthorized":
                self._error(HTTPStatus.UNAUTHORIZED, "Incorrect API key", "invalid_request_error")
            case "bad_request":
                self._error(
                    HTTPStatus.BAD_REQUEST,
                    "This model's maximum context length is 8 tokens",
                    "invalid_request_error",
                    param="messages",
                )
            case "reject_json_mode" if "response_format" in body:
                self._error(
                    HTTPStatus.BAD_REQUEST,
                    "response_format is not supported by this model",
                    "invalid_request_error",
                    param="response_format",
                )
            case _ if behaviour.tool is not None:
                self._completion(body, None, _tool_call(behaviour))
            case kind:
                self._completion(body, behaviour.content or _content(kind, body))

    def _rate_limited(self, behaviour: Behaviour) -> None:
        headers = {}
        if behaviour.retry_after_s is not None:
            headers["Retry-After"] = str(behaviour.retry_after_s)
        if behaviour.retry_after_ms is not None:
            headers["retry-after-ms"] = str(behaviour.retry_after_ms)
        self._error(
            HTTPStatus.TOO_MANY_REQUESTS,
            "Rate limit reached for requests",
            "requests",
            code="rate_limit_exceeded",
            headers=headers,
        )

    def _completion(
        self, body: dict[str, Any], content: str | None, tool_call: dict[str, Any] | None = None
    ) -> None:
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        completion_tokens = len((content or "").split())
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if tool_call is not None:
            message["tool_calls"] = [tool_call]
        self._json(
            HTTPStatus.OK,
            {
                "id": f"chatcmpl-{random.getrandbits(64):016x}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "fake-model"),
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": "stop" if tool_call is None else "tool_calls",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            },
        )

    def _error(
        self,
        status: HTTPStatus,
        message: str,
        kind: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        error = {"message": message, "type": kind, "param": param, "code": code}
        self._json(status, {"error": error}, headers)

    def _json(
        self, status: HTTPStatus, payload: object, headers: dict[str, str] | None = None
    ) -> None:
        data = msgspec.json.encode(payload)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


_analyzer = OfflineAnalyzer()


def _tool_call(behaviour: Behaviour) -> dict[str, Any]:
    return {
        "id": f"call_{random.getrandbits(32):08x}",
        "type": "function",
        "function": {"name": behaviour.tool, "arguments": behaviour.arguments},
    }


def _content(kind: Kind, body: dict[str, Any]) -> str:
    analysis = _analyzer.analyze(_utterance(body))
    answer = msgspec.json.encode(analysis).decode()
    match kind:
        case "fenced":
            return f"```json\n{answer}\n```"
        case "prose_json":
            return f"Sure! Here is my analysis:\n{answer}\nLet me know if you need more."
        case "prose":
            return "The learner sounds fairly positive and talks about everyday life."
        case "out_of_range":
            wild = msgspec.structs.replace(analysis, sentiment=3.5, confidence=1.7)
            return msgspec.json.encode(wild).decode()
        case _:
            return answer


def _utterance(body: dict[str, Any]) -> str:
    """The last user message; its "utterance" field when it is JSON, as
    utterstream sends it, else the message as it is."""
    text = next(
        (str(m.get("content", "")) for m in reversed(body["messages"]) if m.get("role") == "user"),
        "",
    )
    try:
        decoded = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return text
    return str(decoded.get("utterance", text)) if isinstance(decoded, dict) else text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8911)
    parser.add_argument("--fault-mix", type=float, default=0.0, help="share of faulty calls")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hang-s", type=float, default=60.0, help="how long a hang lasts")
    args = parser.parse_args(argv)
    configure_logging(Settings.from_env().log)
    fake = FakeOpenAI(
        policy=mix_policy(args.fault_mix, args.seed),
        hang_s=args.hang_s,
        host=args.host,
        port=args.port,
    )
    log.info("fake_openai.listening", base_url=fake.base_url, fault_mix=args.fault_mix)
    try:
        fake.serve_forever()
    except KeyboardInterrupt:
        fake.stopping.set()


if __name__ == "__main__":
    main()
