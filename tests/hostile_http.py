"""Hostile HTTP servers for the tests: each mode is a small server on 127.0.0.1 (never any other
address) that answers with one misbehaviour and stops by itself.

    with Hostile(modes.empty_range, data) as s:       # data: the file it serves (bytes)
        run("inspect", s.url("x.gguf"))
        s.requests, s.sent, s.connections              # what the client cost it

A server is a listening socket and one thread per connection (keep-alive honoured, so connection reuse
is visible in `connections`). It stops on leaving the `with`, after LIFETIME_S seconds, or after
`max_requests` requests (later requests are refused by closing the connection), whatever happens to the
test. `sent` counts every byte written (status lines, headers and bodies).

A mode is `answer(server, request)` -> an iterable of byte strings to write (a generator may sleep
between pieces: trickling) or None to close the connection; request: .method, .path, .headers
(lower-case names), .n (1-based request number).
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import time
from dataclasses import dataclass

LIFETIME_S = 60


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    n: int


class Hostile:
    def __init__(self, answer, data: bytes = b"", max_requests: int = 5000, lifetime: float = LIFETIME_S) -> None:
        self.answer = answer
        self.data = data
        self.etag = '"' + hashlib.sha1(data).hexdigest() + '"'
        self.max_requests = max_requests
        self.lock = threading.Lock()
        self.requests = 0
        self.connections = 0
        self.sent = 0
        self.log: list[Request] = []
        self.state: dict = {}
        self.stopped = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(32)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.deadline = time.monotonic() + lifetime
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def url(self, path: str = "x.gguf") -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def __enter__(self) -> "Hostile":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        try:
            self.sock.close()
        except OSError:
            pass

    def _serve(self) -> None:
        while not self.stopped.is_set() and time.monotonic() < self.deadline:
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()
        self.stopped.set()

    def _connection(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        buf = b""
        try:
            while not self.stopped.is_set() and time.monotonic() < self.deadline:
                while b"\r\n\r\n" not in buf:
                    piece = conn.recv(65536)
                    if not piece or len(buf) > 65536:
                        return
                    buf += piece
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = (lines[0].split(" ") + ["", ""])[:3]
                headers = {}
                for ln in lines[1:]:
                    k, _, v = ln.partition(":")
                    headers[k.strip().lower()] = v.strip()
                with self.lock:
                    self.requests += 1
                    n = self.requests
                    req = Request(method, path, headers, n)
                    self.log.append(req)
                if n > self.max_requests:
                    return
                pieces = self.answer(self, req)
                if pieces is None:
                    return
                for p in pieces:
                    if self.stopped.is_set() or time.monotonic() > self.deadline:
                        return
                    conn.sendall(p)
                    with self.lock:
                        self.sent += len(p)
                if headers.get("connection", "").lower() == "close":
                    return
        except OSError:
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass


def head(status: str, headers: dict[str, object]) -> bytes:
    return (f"HTTP/1.1 {status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode("latin-1")


def asked_range(req: Request, size: int) -> tuple[int, int] | None:
    m = re.fullmatch(r"bytes=(\d+)-(\d*)", req.headers.get("range", ""))
    if not m:
        return None
    a = int(m[1])
    return a, min(int(m[2]) if m[2] else size - 1, size - 1)


def ranged(server: Hostile, req: Request, data: bytes | None = None, etag: str | None = None,
           extra: dict | None = None) -> list[bytes]:
    """A correct answer: 206 with the range asked (If-Range honoured), else 200."""
    data = server.data if data is None else data
    etag = server.etag if etag is None else etag
    r = asked_range(req, len(data))
    if_range = req.headers.get("if-range")
    if r is None or (if_range and if_range != etag):
        return [head("200 OK", {"Content-Length": len(data), "ETag": etag, **(extra or {})}), data]
    a, b = r
    if a >= len(data):
        return [head("416 Range Not Satisfiable", {"Content-Range": f"bytes */{len(data)}", "Content-Length": 0})]
    body = data[a:b + 1]
    return [head("206 Partial Content", {"Content-Length": len(body), "Content-Range": f"bytes {a}-{b}/{len(data)}",
                                         "ETag": etag, **(extra or {})}), body]
