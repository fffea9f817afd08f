"""Small hostile servers on loopback, for tests: one that accepts connections and
never answers, and one that answers every request with what a test scripts
(garbage, an HTML page, an SQS answer missing fields).

::

    with silent_server() as url:        # connections accepted, never answered
        ...
    with scripted_server(lambda action, body: (200, b"<html>")) as url:
        ...

``action`` is the SQS action of the request (``X-Amz-Target`` of botocore's JSON
protocol, or the query protocol's ``Action=``), ``body`` its bytes; the answer is
a status and a body, sent as ``application/x-amz-json-1.0``.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["Script", "scripted_server", "silent_server"]

Script = Callable[[str, bytes], tuple[int, bytes]]


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """The URL of a server that accepts every connection and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            held.append(conn)  # kept open, unread, unanswered

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


def _action(headers: dict[str, str], body: bytes) -> str:
    target = headers.get("x-amz-target", "")
    if target:
        return target.rsplit(".", 1)[-1]
    found = re.search(rb"(?:^|&)Action=([A-Za-z]+)", body)
    return found.group(1).decode() if found else ""


@contextlib.contextmanager
def scripted_server(script: Script) -> Iterator[str]:
    """The URL of a server answering each request with ``script(action, body)``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, answer = script(_action(headers, body), body)
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.0")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.daemon = True
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
