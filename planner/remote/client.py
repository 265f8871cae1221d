"""HTTP range reads of file headers: one small client over the standard library's http.client.

    f = RemoteFile(url, label="hf://OWNER/REPO/x.gguf", auth=Auth(host, headers))
    f.open()                      # one 1-byte ranged GET: the size and ETag (and the cache entry)
    r = f.reader()                # a file-like object: read(n) fetches byte ranges as the parser asks
    ...                           # r.read(...) ...
    r.close()                     # the bytes read are saved in the header cache

Only the bytes a parser asks for move: each read is a `Range: bytes=A-B` GET (growing chunks, from
1 MiB), answered 206 with a Content-Range that is checked. A server that ignores Range (200 with the
whole body) is read no further than the first chunk; if the header needs more the read stops with one
line saying why. Redirects are followed by hand (at most 5): credentials go only to the host they are
for (Authorization and cookies are dropped on a redirect to another host, as huggingface_hub does for
its CDN), and an error from the host redirected to names that host.

Errors: 401/403/404/416 and other 4xx, too many redirects, a redirect to another scheme, a truncated
response (fewer bytes than announced) and a server without Range support: PlannerError (exit 2).
Timeouts, refused or reset connections and 5xx/429 are retried (DQ_PLANNER_HTTP_RETRIES, default 3,
with a short backoff); when the retries are spent, NetworkError (exit 1).

Settings (environment): DQ_PLANNER_HTTP_TIMEOUT seconds per connect/read [30], DQ_PLANNER_HTTP_RETRIES
[3], DQ_PLANNER_PROGRESS_AFTER seconds before a progress line appears on stderr [1],
DQ_PLANNER_CACHE=0 turns the header cache off. The cache is $XDG_CACHE_HOME/dq-planner/headers
(~/.cache/dq-planner/headers): for each file the bytes from its start that were read, keyed by the
URL (credentials excluded), the ETag and the size; written atomically (temporary file and rename).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from planner.errors import PlannerError, RunError
from planner.units import human

FIRST_CHUNK = 1 << 20            # the first ranged read of a file
MAX_CHUNK = 16 << 20             # reads grow (doubling) up to this
MAX_HEADER_BYTES = 1 << 30       # no header is larger; past this the file is not what it claims
MAX_REDIRECTS = 5
USER_AGENT = "dq-planner (header reader; ranged reads only)"
_PIECE = 1 << 16                 # bytes per socket read (progress and timeouts are checked between)


class HTTPStatusError(PlannerError):
    """A 4xx answer (exit code 2); .status is the code."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class NetworkError(RunError):
    """The network failed (timeouts, refused or reset connections, server errors) after the retries:
    exit code 1."""


def _env_float(name: str, default: float) -> float:
    try:
        v = float(os.environ.get(name, default))
    except ValueError:
        raise PlannerError(f"${name} must be a number, got '{os.environ.get(name)}'") from None
    if v < 0:
        raise PlannerError(f"${name} must not be negative")
    return v


def timeout_s() -> float:
    return _env_float("DQ_PLANNER_HTTP_TIMEOUT", 30.0) or 30.0


def retries() -> int:
    return int(_env_float("DQ_PLANNER_HTTP_RETRIES", 3))


def cache_dir() -> Path | None:
    """$XDG_CACHE_HOME/dq-planner/headers (else ~/.cache/...); None when DQ_PLANNER_CACHE=0."""
    if os.environ.get("DQ_PLANNER_CACHE", "1") == "0":
        return None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dq-planner" / "headers"


# ---------------------------------------------------------------------------------------------------
# Progress on stderr
# ---------------------------------------------------------------------------------------------------

class Progress:
    """One progress line on stderr once reading has taken longer than DQ_PLANNER_PROGRESS_AFTER seconds:
    what is being read and the bytes so far (rewritten in place on a terminal, else one line every few
    seconds)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.start = time.monotonic()
        self.after = _env_float("DQ_PLANNER_PROGRESS_AFTER", 1.0)
        self.bytes = 0
        self.current = ""
        self.last = 0.0
        self.shown = False
        self.tty = sys.stderr.isatty()

    def add(self, n: int, current: str | None = None) -> None:
        self.bytes += n
        if current is not None:
            self.current = current
        now = time.monotonic()
        if now - self.start < self.after or now - self.last < (0.25 if self.tty else 2.0):
            return
        self.last = now
        line = (f"dq-planner: reading {self.what}: {human(self.bytes)} in {now - self.start:.1f} s"
                + (f" ({self.current})" if self.current else ""))
        if self.tty:
            sys.stderr.write("\r" + line[:200] + "\x1b[K")
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown and self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


# ---------------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Auth:
    """Headers (a token) for one origin (scheme://host:port) only."""

    origin: str = ""
    headers: tuple[tuple[str, str], ...] = ()

    def for_url(self, url: str) -> dict[str, str]:
        return dict(self.headers) if self.headers and origin(url) == self.origin else {}


NO_AUTH = Auth()


def origin(url: str) -> str:
    u = urlsplit(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    return f"{u.scheme}://{(u.hostname or '').lower()}:{port}"


@dataclass
class Response:
    status: int
    headers: dict[str, str]              # lower-case names
    first_headers: dict[str, str]        # the first answer's (before redirects): X-Linked-Size/-Etag
    url: str                             # the URL that answered
    redirected: bool
    conn: http.client.HTTPConnection
    resp: http.client.HTTPResponse

    def close(self) -> None:
        try:
            self.conn.close()
        except OSError:
            pass


class _Retry(Exception):
    """A transient failure: try again (connection, timeout, 5xx, 429)."""


def _connect(url: str) -> http.client.HTTPConnection:
    u = urlsplit(url)
    if u.scheme == "https":
        return http.client.HTTPSConnection(u.hostname, u.port, timeout=timeout_s())
    if u.scheme == "http":
        return http.client.HTTPConnection(u.hostname, u.port, timeout=timeout_s())
    raise PlannerError(f"{url}: unsupported URL scheme '{u.scheme}' (http, https, hf, ms)")


def _target(url: str) -> str:
    u = urlsplit(url)
    return (u.path or "/") + (f"?{u.query}" if u.query else "")


def _status_error(label: str, r: Response) -> HTTPStatusError:
    where = f" (answered by {urlsplit(r.url).netloc}, the host a redirect led to)" if r.redirected else ""
    s = r.status
    if s == 401:
        why = "401 Unauthorized: a private or gated repository needs a token (HF_TOKEN / MODELSCOPE_API_TOKEN)"
    elif s == 403:
        why = "403 Forbidden: no access with these credentials (a gated model not accepted, or an expired link)"
    elif s == 404:
        why = "404 Not Found: no such file, repository or revision"
    elif s == 416:
        why = "416 Range Not Satisfiable: the file is shorter than the bytes asked for (empty or truncated)"
    else:
        why = f"HTTP {s} {r.resp.reason}"
    return HTTPStatusError(f"{label}: {why}{where}", s)


def request(method: str, url: str, headers: dict[str, str], auth: Auth, label: str,
            stop_at_linked: bool = False) -> Response:
    """One request, redirects followed by hand; credentials only to their origin. Returns the open
    response (2xx; the caller reads and closes it). stop_at_linked: a redirect that carries X-Linked-Size
    and X-Linked-Etag (the Hugging Face hub's answer for a large file) is returned as it is."""
    first: dict[str, str] | None = None
    current = url
    for hop in range(MAX_REDIRECTS + 1):
        conn = _connect(current)
        h = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **headers, **auth.for_url(current)}
        try:
            conn.request(method, _target(current), headers=h)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise _Retry(f"{urlsplit(current).hostname}: {e or type(e).__name__}") from None
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        if first is None:
            first = hdrs
        r = Response(resp.status, hdrs, first, current, hop > 0, conn, resp)
        if resp.status in (301, 302, 303, 307, 308):
            if stop_at_linked and "x-linked-size" in hdrs and "x-linked-etag" in hdrs:
                return r
            loc = hdrs.get("location")
            r.close()
            if not loc:
                raise PlannerError(f"{label}: redirect {resp.status} without a Location")
            nxt = urljoin(current, loc)
            if urlsplit(nxt).scheme not in ("http", "https"):
                raise PlannerError(f"{label}: redirected to an unsupported URL scheme ({urlsplit(nxt).scheme})")
            current = nxt
            continue
        if resp.status >= 500 or resp.status == 429:
            r.close()
            raise _Retry(f"{urlsplit(current).hostname}: HTTP {resp.status} {resp.reason}")
        if resp.status >= 400:
            r.close()
            raise _status_error(label, r)
        return r
    raise PlannerError(f"{label}: more than {MAX_REDIRECTS} redirects")


def with_retries(label: str, fn):
    """fn() with bounded retries of transient failures; NetworkError when they are spent."""
    n = retries()
    for attempt in range(n + 1):
        try:
            return fn()
        except _Retry as e:
            if attempt == n:
                if isinstance(e, _Truncated):     # the server's answer is short: bad input, not the network
                    raise PlannerError(str(e)) from None
                raise NetworkError(f"{label}: network failure after {n + 1} attempts: {e}") from None
            time.sleep(min(0.2 * 2 ** attempt, 2.0))


def _read_body(r: Response, limit: int, label: str, progress: Progress | None, expected: int | None) -> bytes:
    """At most `limit` bytes of the body; fewer than `expected` (the announced length) is truncation."""
    out = bytearray()
    try:
        while len(out) < limit:
            piece = r.resp.read(min(_PIECE, limit - len(out)))
            if not piece:
                break
            out += piece
            if progress is not None:
                progress.add(len(piece))
    except http.client.IncompleteRead as e:
        out += e.partial
        r.close()
        raise _Truncated(f"{label}: truncated response: the server announced {expected} bytes and sent "
                         f"{len(out)}") from None
    except (OSError, http.client.HTTPException) as e:
        r.close()
        raise _Retry(f"{urlsplit(r.url).hostname}: {e or type(e).__name__} after {len(out)} bytes") from None
    if expected is not None and len(out) < min(expected, limit):
        r.close()
        raise _Truncated(f"{label}: truncated response: the server announced {expected} bytes and sent {len(out)}")
    return bytes(out)


class _Truncated(_Retry):
    """A body shorter than announced: retried, then a bad-input error (exit 2), not a network one."""


def fetch_all(url: str, auth: Auth, label: str, limit: int = 64 << 20) -> bytes:
    """A small whole file (config.json, an index, a listing page); refused above `limit` bytes."""
    def once() -> bytes:
        r = request("GET", url, {}, auth, label)
        try:
            n = r.headers.get("content-length")
            if n is not None and n.isdigit() and int(n) > limit:
                raise PlannerError(f"{label}: {int(n)} bytes, more than the {limit} read for a small file")
            data = _read_body(r, limit + 1, label, None, int(n) if n and n.isdigit() else None)
            if len(data) > limit:
                raise PlannerError(f"{label}: more than the {limit} bytes read for a small file")
            return data
        finally:
            r.close()
    return with_retries(label, once)


def fetch_json(url: str, auth: Auth, label: str, limit: int = 64 << 20):
    data, _ = fetch_json_with_headers(url, auth, label, limit)
    return data


def fetch_json_with_headers(url: str, auth: Auth, label: str, limit: int = 64 << 20):
    """(the parsed JSON, the response headers) of a small JSON document (a listing page: Link header)."""
    import json

    box: dict = {}

    def once() -> bytes:
        r = request("GET", url, {"Accept": "application/json"}, auth, label)
        try:
            box["headers"] = r.headers
            n = r.headers.get("content-length")
            return _read_body(r, limit + 1, label, None, int(n) if n and n.isdigit() else None)
        finally:
            r.close()
    raw = with_retries(label, once)
    if len(raw) > limit:
        raise PlannerError(f"{label}: more than {limit} bytes of JSON")
    try:
        return json.loads(raw.decode("utf-8")), box.get("headers", {})
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise PlannerError(f"{label}: not valid JSON ({e})") from None




# ---------------------------------------------------------------------------------------------------
# A remote file read from its start
# ---------------------------------------------------------------------------------------------------

@dataclass
class RemoteFile:
    """One published file: its size and ETag from a 1-byte ranged GET, its bytes through reader()."""

    url: str                             # the URL asked (hub resolve URLs, not the CDN's)
    label: str                           # how messages name it (hf://..., the URL)
    auth: Auth = NO_AUTH
    progress: Progress | None = None
    first_chunk: int = FIRST_CHUNK
    size: int = -1
    etag: str = ""
    ranges: bool = True                  # False: the server answered a ranged GET with 200
    buf: bytearray = field(default_factory=bytearray)   # bytes [0, len) known (cached or read)
    cached: int = 0                      # of which came from the cache
    sent: int = 0                        # bytes received over the network for this file
    last_modified: str = ""
    _cache_key: str = ""

    def open(self) -> "RemoteFile":
        """The probe: size and ETag (X-Linked-* of the hub's redirect first), then the cache entry."""
        def once() -> None:
            r = request("GET", self.url, {"Range": "bytes=0-0"}, self.auth, self.label, stop_at_linked=True)
            try:
                h, first = r.headers, r.first_headers
                size = first.get("x-linked-size")
                etag = first.get("x-linked-etag") or h.get("etag", "")
                if r.status == 206:
                    total = _content_range(h.get("content-range", ""), self.label)[2]
                    size = size or total
                    self.sent += len(_read_body(r, 1, self.label, None, 1))
                elif r.status == 200:          # Range ignored: the first chunk of the body, no more
                    self.ranges = False
                    size = size or h.get("content-length")
                    if size is not None and str(size).isdigit():
                        n = min(int(size), self.first_chunk)
                        self.buf = bytearray(_read_body(r, n, self.label, self.progress, n))
                        self.sent += len(self.buf)
                elif r.status in (301, 302, 303, 307, 308):       # the hub's answer, not followed
                    pass
                else:
                    raise PlannerError(f"{self.label}: unexpected HTTP {r.status} to a ranged GET")
                if size is None or not str(size).isdigit():
                    raise PlannerError(f"{self.label}: the server does not say the file's size")
                self.size = int(size)
                self.etag = etag.strip()
                self.last_modified = h.get("last-modified", "")
            finally:
                r.close()
        with_retries(self.label, once)
        self._load_cache()
        return self

    # -- cache -----------------------------------------------------------------------------------
    def _key(self) -> str:
        validator = self.etag or self.last_modified
        return hashlib.sha256(f"{self.url}\0{validator}\0{self.size}".encode()).hexdigest()

    def _load_cache(self) -> None:
        d = cache_dir()
        if d is None or not (self.etag or self.last_modified):
            return
        self._cache_key = self._key()
        try:
            data = (d / f"{self._cache_key}.bin").read_bytes()
        except OSError:
            return
        if len(self.buf) < len(data) <= self.size:
            self.buf = bytearray(data)
            self.cached = len(data)

    def save_cache(self) -> None:
        d = cache_dir()
        if d is None or not self._cache_key or len(self.buf) <= self.cached:
            return
        try:
            d.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".part-", dir=d)
            with os.fdopen(fd, "wb") as f:
                f.write(self.buf)
            os.replace(tmp, d / f"{self._cache_key}.bin")
            self.cached = len(self.buf)
        except OSError:
            try:
                os.unlink(tmp)   # type: ignore[possibly-undefined]
            except (OSError, NameError):
                pass

    # -- ranged reads ----------------------------------------------------------------------------
    def ensure(self, end: int) -> None:
        """Bytes [0, end) in buf (end clamped to the size), fetched in growing ranged reads."""
        end = min(end, self.size)
        if end > MAX_HEADER_BYTES:
            raise PlannerError(f"{self.label}: a header of more than {human(MAX_HEADER_BYTES)} is not plausible; "
                               "stopped reading")
        chunk = self.first_chunk
        while len(self.buf) < end:
            start = len(self.buf)
            want = max(end - start, chunk)
            stop = min(start + want, self.size)
            self._fetch(start, stop)
            chunk = min(chunk * 2, MAX_CHUNK)

    def _fetch(self, start: int, stop: int) -> None:
        if not self.ranges:
            raise PlannerError(
                f"{self.label}: the server ignores Range requests (it answers with the whole {human(self.size)} "
                f"file), so only the first {human(len(self.buf))} were read; the header needs more. "
                "Not downloading the file: use a server or mirror that supports ranged reads")

        def once() -> None:
            r = request("GET", self.url, {"Range": f"bytes={start}-{stop - 1}"}, self.auth, self.label)
            try:
                h = r.headers
                if r.status == 200:
                    # Range ignored: keep at most the first chunk of the body and stop there
                    self.ranges = False
                    if start != 0:
                        raise PlannerError(f"{self.label}: the server ignored a Range request for bytes "
                                           f"{start}-{stop - 1}; not downloading the file")
                    data = _read_body(r, min(stop, self.first_chunk), self.label, self.progress, None)
                    self.sent += len(data)
                    self.buf = bytearray(data)
                    return
                if r.status != 206:
                    raise PlannerError(f"{self.label}: unexpected HTTP {r.status} to a ranged GET")
                a, b, total = _content_range(h.get("content-range", ""), self.label)
                if a != start:
                    raise PlannerError(f"{self.label}: asked for bytes from {start}, the server sent from {a}")
                if total is not None and total != self.size:
                    raise PlannerError(f"{self.label}: the file changed while it was read "
                                       f"({self.size} bytes, now {total})")
                n = b - a + 1
                data = _read_body(r, n, self.label, self.progress, n)
                self.sent += len(data)
                self.buf += data
            finally:
                r.close()
        with_retries(self.label, once)

    def reader(self) -> "RangeReader":
        return RangeReader(self)


def _content_range(v: str, label: str) -> tuple[int, int, int | None]:
    """'bytes A-B/TOTAL' (TOTAL may be '*')."""
    try:
        unit, rest = v.strip().split(" ", 1)
        rng, total = rest.split("/", 1)
        a, b = rng.split("-", 1)
        if unit != "bytes":
            raise ValueError
        return int(a), int(b), None if total.strip() == "*" else int(total)
    except ValueError:
        raise PlannerError(f"{label}: a 206 answer without a valid Content-Range ('{v}')") from None


class RangeReader:
    """A read-only file object over a RemoteFile: read(n) from the current position, bytes fetched as
    they are asked for; close() saves what was read in the cache."""

    def __init__(self, f: RemoteFile) -> None:
        self.f = f
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.f.size - self.pos
        self.f.ensure(self.pos + n)
        data = bytes(self.f.buf[self.pos:self.pos + n])
        self.pos += len(data)
        return data

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = pos if whence == 0 else (self.pos + pos if whence == 1 else self.f.size + pos)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def close(self) -> None:
        self.f.save_cache()

    def __enter__(self) -> "RangeReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
