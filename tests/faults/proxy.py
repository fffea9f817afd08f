"""A fault-injecting HTTP/1.1 proxy for tests: it sits on loopback in front of an
SQS-compatible server (the moto server) and, at set rates, answers in its place
with the failures a real network and a real SQS produce.

::

    with FaultProxy(moto_endpoint, FaultPlan.mixed(0.10, seed=7)) as proxy:
        broker = SqsBroker(endpoint_url=proxy.url)
        ...
        assert proxy.stats.faults[Fault.RESET_AFTER] > 0

Faults (``Fault``):

``http_500`` / ``http_503``
    An SQS-style error answer (``InternalError`` / ``ServiceUnavailable``); the
    request never reaches the server.
``throttling`` / ``request_throttled``
    HTTP 400 ``ThrottlingException`` / ``RequestThrottled``, not forwarded.
``reset_before``
    The client's connection is reset (``SO_LINGER`` 0, so an RST) before the
    request is forwarded: the server never sees it.
``reset_after``
    The request is forwarded and the server applies it; then the connection is
    reset instead of returning the answer (the answer is lost, the effect is not).
``latency``
    The request is held ``plan.latency`` seconds, then forwarded normally.

Error answers follow the request's protocol: the JSON protocol that botocore
uses for SQS (``x-amz-json-1.0`` with ``X-Amz-Target: AmazonSQS.<Action>``)
gets ``{"__type": ..., "message": ...}`` and an ``x-amzn-query-error`` header,
as SQS and moto send; the query protocol (form-encoded ``Action=``) gets an XML
``ErrorResponse``. botocore classifies them as SQS errors (retryable ones in
standard retry mode), so tests exercise the real retry paths.

Decisions come from ``random.Random(plan.seed)``, drawn once per eligible
request in arrival order: a given seed and a given order of requests always
give the same faults. Clients that send from several threads at once make the
arrival order vary; ``FaultPlan(stream=per_queue)`` then keeps one random
sequence per queue, which is deterministic whenever each queue's requests are
sequential (enqueue-batch to FIFO queues, for one), and ``stream=per_body`` one
per distinct request body (a retry draws the next number of its body's
sequence), deterministic whatever the order when bodies are (standard queues:
no random ids in a SendMessageBatch).

``FaultStats`` counts requests, forwards and faults by kind and by action, so a
test can assert that the faults really happened. Keep-alive connections are
served (several requests per connection) by a thread per connection.

Worker tests can use it as it is: ``FaultPlan.mixed(0.1, actions={"ReceiveMessage",
"DeleteMessageBatch", "ChangeMessageVisibilityBatch"})`` faults only those calls;
long polls pass through (each connection has its own thread).
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import http.client
import io
import json
import random
import re
import socket
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "ALL_FAULTS",
    "ERROR_FAULTS",
    "NO_FAULTS",
    "Fault",
    "FaultPlan",
    "FaultProxy",
    "FaultStats",
    "action_of",
    "per_body",
    "per_queue",
]


class Fault(str, enum.Enum):
    """What the proxy can do to a request instead of passing it through."""

    HTTP_500 = "http_500"
    HTTP_503 = "http_503"
    THROTTLING = "throttling"
    REQUEST_THROTTLED = "request_throttled"
    RESET_BEFORE = "reset_before"
    RESET_AFTER = "reset_after"
    LATENCY = "latency"


ALL_FAULTS: tuple[Fault, ...] = tuple(Fault)
#: The faults answered with an HTTP error (and never forwarded).
ERROR_FAULTS: tuple[Fault, ...] = (
    Fault.HTTP_500,
    Fault.HTTP_503,
    Fault.THROTTLING,
    Fault.REQUEST_THROTTLED,
)

Selector = Callable[[str, bytes], bool]
StreamKey = Callable[[str, bytes], str]


_AUTHORITY = re.compile(rb"https?://[^/\"&]+")


def per_body(action: str, body: bytes) -> str:
    """A stream key: the action and a digest of the request body, URLs' scheme and
    host:port left out (a queue url names the proxy's port, which varies)."""
    return f"{action}:{hashlib.sha256(_AUTHORITY.sub(b'', body)).hexdigest()}"


def per_queue(action: str, body: bytes) -> str:
    """A stream key: the request's queue (``QueueUrl`` or ``QueueName``), else ``""``."""
    try:
        fields = json.loads(body) if body.startswith(b"{") else None
    except ValueError:
        fields = None
    if fields is None:
        form = parse_qs(body.decode(errors="replace"))
        fields = {k: v[0] for k, v in form.items()}
    if not isinstance(fields, dict):
        return ""
    url = fields.get("QueueUrl") or fields.get("QueueName") or ""
    return str(url).rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class FaultPlan:
    """Which faults, how often, to which requests.

    ``rates`` maps each fault to the probability that an eligible request gets
    it; the sum must be at most 1 (one fault per request at most). A request is
    eligible when its action is in ``actions`` (``None``: every action) and
    ``select(action, body)`` is true (``None``: always). ``stream(action, body)``
    names the random sequence a request draws from (``None``: one for all).
    """

    rates: Mapping[Fault, float] = field(default_factory=dict)
    seed: int = 0
    actions: frozenset[str] | None = None
    select: Selector | None = None
    latency: float = 0.2
    stream: StreamKey | None = None

    def __post_init__(self) -> None:
        if any(rate < 0 for rate in self.rates.values()):
            raise ValueError("fault rates must not be negative")
        if sum(self.rates.values()) > 1 + 1e-9:
            raise ValueError(f"fault rates add up to {sum(self.rates.values())}, more than 1")

    @classmethod
    def mixed(
        cls,
        rate: float,
        kinds: Iterable[Fault] = ALL_FAULTS,
        *,
        seed: int = 0,
        actions: Iterable[str] | None = None,
        select: Selector | None = None,
        latency: float = 0.2,
        stream: StreamKey | None = None,
    ) -> FaultPlan:
        """``rate`` of the eligible requests faulted, shared evenly by ``kinds``."""
        chosen = list(dict.fromkeys(kinds))
        return cls(
            rates={kind: rate / len(chosen) for kind in chosen},
            seed=seed,
            actions=frozenset(actions) if actions is not None else None,
            select=select,
            latency=latency,
            stream=stream,
        )

    @classmethod
    def always(
        cls,
        kind: Fault,
        *,
        actions: Iterable[str] | None = None,
        select: Selector | None = None,
    ) -> FaultPlan:
        """Every eligible request gets ``kind``."""
        return cls.mixed(1.0, [kind], actions=actions, select=select)

    def eligible(self, action: str, body: bytes) -> bool:
        if self.actions is not None and action not in self.actions:
            return False
        return self.select is None or self.select(action, body)


#: No faults: every request passes through.
NO_FAULTS = FaultPlan()


class FaultStats:
    """What the proxy did, counted by action and by fault kind (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()  # by action
        self.forwarded: Counter[str] = Counter()  # by action: reached the server
        self.faults: Counter[Fault] = Counter()
        self.by_action: dict[str, Counter[Fault]] = {}
        self.connections = 0  # client connections accepted

    def _connected(self) -> None:
        with self._lock:
            self.connections += 1

    def _record(self, action: str, fault: Fault | None) -> None:
        with self._lock:
            self.requests[action] += 1
            if fault is not None:
                self.faults[fault] += 1
                self.by_action.setdefault(action, Counter())[fault] += 1

    def _forward(self, action: str) -> None:
        with self._lock:
            self.forwarded[action] += 1

    def count(self, fault: Fault | None = None, action: str | None = None) -> int:
        """Faults of one kind (``None``: all kinds), of one action (``None``: all)."""
        with self._lock:
            counts = self.faults if action is None else self.by_action.get(action, Counter())
            if fault is None:
                return sum(counts.values())
            return counts[fault]

    def snapshot(self) -> dict[str, object]:
        """A plain dict, e.g. for a test's report."""
        with self._lock:
            return {
                "connections": self.connections,
                "requests": dict(sorted(self.requests.items())),
                "forwarded": dict(sorted(self.forwarded.items())),
                "faults": {k.value: v for k, v in sorted(self.faults.items())},
                "by_action": {
                    action: {k.value: v for k, v in sorted(counts.items())}
                    for action, counts in sorted(self.by_action.items())
                },
            }

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.forwarded.clear()
            self.faults.clear()
            self.by_action.clear()
            self.connections = 0


# -- error answers ------------------------------------------------------------


@dataclass(frozen=True)
class _ErrorAnswer:
    status: int
    code: str  # the query-protocol code botocore reports as the error code
    json_type: str
    side: str  # Sender / Receiver, as SQS's x-amzn-query-error says
    message: str


_ANSWERS: dict[Fault, _ErrorAnswer] = {
    Fault.HTTP_500: _ErrorAnswer(
        500,
        "InternalError",
        "com.amazonaws.sqs#InternalError",
        "Receiver",
        "We encountered an internal error. Please try again.",
    ),
    Fault.HTTP_503: _ErrorAnswer(
        503,
        "ServiceUnavailable",
        "com.amazonaws.sqs#ServiceUnavailable",
        "Receiver",
        "Service is unable to handle request.",
    ),
    Fault.THROTTLING: _ErrorAnswer(
        400,
        "ThrottlingException",
        "com.amazon.coral.availability#ThrottlingException",
        "Sender",
        "Rate exceeded",
    ),
    Fault.REQUEST_THROTTLED: _ErrorAnswer(
        400,
        "RequestThrottled",
        "com.amazonaws.sqs#RequestThrottled",
        "Sender",
        "Request is throttled.",
    ),
}


def _error_answer(answer: _ErrorAnswer, json_protocol: bool) -> tuple[dict[str, str], bytes]:
    request_id = str(uuid.uuid4())
    headers = {"x-amzn-RequestId": request_id}
    if json_protocol:
        headers["Content-Type"] = "application/x-amz-json-1.0"
        headers["x-amzn-query-error"] = f"{answer.code};{answer.side}"
        headers["X-Amzn-Errortype"] = answer.json_type
        body = json.dumps({"__type": answer.json_type, "message": answer.message}).encode()
        return headers, body
    headers["Content-Type"] = "text/xml"
    side = "Receiver" if answer.status >= 500 else "Sender"
    xml = (
        '<?xml version="1.0"?><ErrorResponse '
        'xmlns="http://queue.amazonaws.com/doc/2012-11-05/"><Error>'
        f"<Type>{side}</Type><Code>{answer.code}</Code><Message>{answer.message}</Message>"
        f"<Detail/></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
    )
    return headers, xml.encode()


def action_of(headers: Mapping[str, str], path: str, body: bytes) -> str:
    """The API action of a request: ``X-Amz-Target`` (JSON protocol), ``Action=``
    (query protocol), or the last part of an RPC path; else the method-less path."""
    target = headers.get("X-Amz-Target") or headers.get("x-amz-target")
    if target:
        return target.rsplit(".", 1)[-1]
    if "/operation/" in path:
        return path.rstrip("/").rsplit("/", 1)[-1]
    query = urlsplit(path).query
    form = parse_qs(query)
    content_type = headers.get("Content-Type", "")
    if "x-www-form-urlencoded" in content_type:
        form.update(parse_qs(body.decode(errors="replace")))
    actions = form.get("Action")
    return actions[0] if actions else (urlsplit(path).path or "/")


# -- the proxy ----------------------------------------------------------------

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: FaultProxy


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # an answer is two writes: no delayed-ACK stalls
    server: _Server
    timeout = 120  # an idle keep-alive connection is dropped after this

    def setup(self) -> None:
        super().setup()
        self.server.proxy._opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.proxy._closed(self.connection)

    def log_message(self, format: str, *args: object) -> None:
        pass  # tests stay quiet

    def do_POST(self) -> None:
        self._proxy()

    do_GET = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_POST

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _proxy(self) -> None:
        body = self._read_body()
        headers = {k: v for k, v in self.headers.items()}
        action = action_of(headers, self.path, body)
        proxy = self.server.proxy
        fault = proxy._decide(action, body)
        if fault is Fault.RESET_BEFORE:
            self._reset()
            return
        if fault in _ANSWERS:
            json_protocol = "json" in headers.get("Content-Type", "") or "X-Amz-Target" in headers
            answer_headers, answer = _error_answer(_ANSWERS[fault], json_protocol)
            self._answer(_ANSWERS[fault].status, list(answer_headers.items()), answer)
            return
        if fault is Fault.LATENCY:
            time.sleep(proxy.plan.latency)
        status, reply_headers, reply = self._forward(body)
        proxy.stats._forward(action)
        if fault is Fault.RESET_AFTER:
            self._reset()
            return
        self._answer(status, reply_headers, reply)

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        """Send the request to the server on a new connection; its whole answer."""
        upstream = self.server.proxy._upstream
        conn = http.client.HTTPConnection(upstream[0], upstream[1], timeout=120)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    conn.putheader(name, value)
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            response = conn.getresponse()
            reply = response.read()
            reply_headers = [
                (k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP
            ]
            return response.status, reply_headers, reply
        finally:
            conn.close()

    def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response_only(status)
        for name, value in headers:
            if name.lower() not in ("server", "date"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _reset(self) -> None:
        """Abort the connection with an RST: no answer, no orderly close."""
        self.close_connection = True
        sock = self.connection
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # The socket closes only when its file objects are closed too; the
        # handler flushes ``wfile`` after each request, so it gets a stand-in.
        self.rfile.close()
        self.wfile.close()
        sock.close()
        self.rfile, self.wfile = io.BytesIO(), io.BytesIO()


class FaultProxy:
    """The proxy, as a context manager: ``url`` is where clients connect.

    ``plan`` may be replaced while the proxy runs (``proxy.plan = ...``), e.g. to
    create queues without faults and then send through them; the random
    sequence restarts from the new plan's seed.
    """

    def __init__(self, upstream: str, plan: FaultPlan = NO_FAULTS) -> None:
        parts = urlsplit(upstream)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"upstream {upstream!r} is not http://HOST:PORT")
        self._upstream = (parts.hostname, parts.port)
        self._lock = threading.Lock()
        self._plan = plan
        self._streams: dict[str, random.Random] = {}
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.stats = FaultStats()
        self.url = ""

    @property
    def plan(self) -> FaultPlan:
        return self._plan

    @plan.setter
    def plan(self, plan: FaultPlan) -> None:
        with self._lock:
            self._plan = plan
            self._streams = {}

    def _decide(self, action: str, body: bytes) -> Fault | None:
        with self._lock:
            plan = self._plan
            fault = None
            if plan.rates and plan.eligible(action, body):
                key = plan.stream(action, body) if plan.stream is not None else ""
                rng = self._streams.get(key)
                if rng is None:
                    rng = self._streams[key] = random.Random(f"{plan.seed}:{key}")
                draw = rng.random()
                edge = 0.0
                for kind, rate in plan.rates.items():
                    edge += rate
                    if draw < edge:
                        fault = kind
                        break
        self.stats._record(action, fault)
        return fault

    def _opened(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections.add(sock)
        self.stats._connected()

    def _closed(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections.discard(sock)

    def start(self) -> FaultProxy:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.proxy = self
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            open_connections = list(self._connections)
        for sock in open_connections:  # wake handlers idling on keep-alive connections
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
