"""HTTP range reads of file headers over `requests` (proxies, NO_PROXY and certificates from the
environment, connections reused).

    f = RemoteFile(url, label="hf://OWNER/REPO/x.gguf", auth=Auth(host, headers), magic=b"GGUF")
    f.open()                      # one 1-byte ranged GET: the size and ETag (and the cache entry)
    r = f.reader()                # a file-like object: read(n) fetches byte ranges as the parser asks
    ...                           # r.read(...) ...
    r.close()                     # the bytes read are saved in the header cache

Only the bytes a parser asks for move: each read is a `Range: bytes=A-B` GET (growing chunks, from
1 MiB, doubling to 16 MiB), answered 206 with a Content-Range that is checked: it starts where it was
asked, ends inside the range asked (a longer answer is refused before its body is read), holds at least
min(asked, 64 KiB) bytes (every read makes progress), and a file needs at most MAX_RANGE_READS of them.
Later ranges carry `If-Range` with the first answer's ETag; an answer with another ETag, or the whole
body instead of the range, means the file changed while it was read: one line, nothing cached. A
server that ignores Range (200 with the whole body) is read no further than the first chunk; if the
header needs more the read stops with one line saying why. A compressed answer (Content-Encoding other
than identity, which is asked for) is refused: its bytes are not the file's.

Redirects are followed by hand (at most 5, no redirect body read): credentials go only to the origin
they are for (Authorization and cookies are never sent to another host, as huggingface_hub does for its
CDN), and an error from the host redirected to names that host. `requests` does each request: proxy
settings (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY), REQUESTS_CA_BUNDLE / SSL_CERT_FILE, and one
connection pool per host for the whole process; ~/.netrc is not read (credentials are the hubs' tokens).

Errors: 401/403/404/416 and other 4xx, too many redirects, a redirect to another scheme, a truncated or
over-long answer, no progress, a file that changed, a compressed answer and a server without Range
support: PlannerError (exit 2). Timeouts, refused or reset connections and 5xx/429 are retried
(DQ_PLANNER_HTTP_RETRIES, default 3, with a short backoff); when the retries are spent, or a file's
header read passes DQ_PLANNER_HTTP_DEADLINE, NetworkError (exit 1).

Settings (environment): DQ_PLANNER_HTTP_TIMEOUT seconds per connect/read [30, at most 3600],
DQ_PLANNER_HTTP_DEADLINE seconds for one file's header [600, at most 86400], DQ_PLANNER_HTTP_RETRIES
[3, at most 20], DQ_PLANNER_PROGRESS_AFTER seconds before a progress line appears on stderr [1],
DQ_PLANNER_CACHE=0 turns the header cache off. The cache is $XDG_CACHE_HOME/dq-planner/headers
(~/.cache/dq-planner/headers): for each file the bytes from its start that were read, keyed by the
URL (credentials excluded), the ETag and the size; each entry starts with a tag, its key and the
SHA-256 of its bytes, is opened without following links and read only when it is a regular file of a
plausible size whose tag, key, checksum and magic agree (anything else is removed and refetched), and
is written atomically (temporary file and rename).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import stat
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from planner.errors import PlannerError, RunError
from planner.safe_text import printable
from planner.units import human

FIRST_CHUNK = 1 << 20            # the first ranged read of a file
MAX_CHUNK = 16 << 20             # reads grow (doubling) up to this
MIN_PROGRESS = 64 << 10          # a ranged answer holds at least min(asked, this) bytes
MAX_RANGE_READS = 256            # ranged reads per file (a 1 GiB header takes 67)
MAX_HEADER_BYTES = 1 << 30       # no header is larger; past this the file is not what it claims
MAX_REDIRECTS = 5
USER_AGENT = "dq-planner (header reader; ranged reads only)"
_PIECE = 1 << 16                 # bytes per socket read (progress and the deadline are checked between)
_CACHE_TAG = b"DQPH1\0"          # a cache entry: tag, sha256(key), sha256(bytes), bytes
_CACHE_HEAD = len(_CACHE_TAG) + 64


class HTTPStatusError(PlannerError):
    """A 4xx answer (exit code 2); .status is the code."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class NetworkError(RunError):
    """The network failed (timeouts, refused or reset connections, server errors) after the retries:
    exit code 1."""


def _env_number(name: str, default: float, low: float, high: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = float(raw)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and low <= v <= high):
        raise PlannerError(f"${name} must be a number from {low:g} to {high:g}, got {printable(raw)!r}")
    return v


def timeout_s() -> float:
    return _env_number("DQ_PLANNER_HTTP_TIMEOUT", 30.0, 0, 3600) or 30.0


def deadline_s() -> float:
    return _env_number("DQ_PLANNER_HTTP_DEADLINE", 600.0, 0, 86400) or 600.0


def retries() -> int:
    v = _env_number("DQ_PLANNER_HTTP_RETRIES", 3, 0, 20)
    if v != int(v):
        raise PlannerError(f"$DQ_PLANNER_HTTP_RETRIES must be a whole number from 0 to 20, got {v:g}")
    return int(v)


def cache_dir() -> Path | None:
    """$XDG_CACHE_HOME/dq-planner/headers (else ~/.cache/...); None when DQ_PLANNER_CACHE=0."""
    if os.environ.get("DQ_PLANNER_CACHE", "1") == "0":
        return None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dq-planner" / "headers"


_DIGITS = re.compile(r"[0-9]{1,19}")


def header_int(value: str | None, name: str, label: str) -> int | None:
    """A server's integer header (Content-Length, X-Linked-Size): ASCII digits only, below 2^63; None
    when absent. Anything else ('²', '-1', '1e3') is a one-line error naming the header."""
    if value is None:
        return None
    v = value.strip()
    if not _DIGITS.fullmatch(v) or int(v) >= 1 << 63:
        raise PlannerError(f"{label}: the server's {name} is not a byte count ({printable(v)[:40]!r})")
    return int(v)


# ---------------------------------------------------------------------------------------------------
# Progress on stderr
# ---------------------------------------------------------------------------------------------------

class Progress:
    """One progress line on stderr once reading has taken longer than DQ_PLANNER_PROGRESS_AFTER seconds:
    what is being read and the bytes so far (rewritten in place on a terminal, else one line every few
    seconds)."""

    def __init__(self, what: str) -> None:
        self.what = printable(what)
        self.start = time.monotonic()
        self.after = _env_number("DQ_PLANNER_PROGRESS_AFTER", 1.0, 0, 86400)
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
                + (f" ({printable(self.current)})" if self.current else ""))
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
    try:
        port = u.port or (443 if u.scheme == "https" else 80)
    except ValueError:
        port = -1
    return f"{u.scheme}://{(u.hostname or '').lower()}:{port}"


def check_url(url: str, label: str | None = None) -> str:
    """An http(s) URL with a host and a valid port, without whitespace or control characters: else
    one line (bad input, exit 2)."""
    where = label or printable(url)
    if any(c.isspace() for c in url) or printable(url) != url:
        raise PlannerError(f"{where}: a URL cannot hold spaces or control characters (write a space as %20)")
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError as e:
        raise PlannerError(f"{where}: not a valid URL ({e})") from None
    if u.scheme not in ("http", "https"):
        raise PlannerError(f"{where}: unsupported URL scheme '{printable(u.scheme)}' (http, https, hf, ms)")
    if not u.hostname:
        raise PlannerError(f"{where}: a URL needs a host")
    if port == 0:
        raise PlannerError(f"{where}: port 0 is not a port")
    return url


class _NoNetrc(requests.auth.AuthBase):
    """Given as `auth`, so that requests does not put ~/.netrc credentials on a request."""

    def __call__(self, r):
        return r


class _Session(requests.Session):
    """requests' session, redirects left to request(): requests itself would read a redirect's whole
    body (even with allow_redirects=False, to prepare the next request), which a hostile server makes
    endless."""

    def get_redirect_target(self, resp):
        return None


_SESSION: requests.Session | None = None


def session() -> requests.Session:
    """One session per process: its connection pools are reused by every read (8 threads at most)."""
    global _SESSION
    if _SESSION is None:
        s = _Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=16, pool_maxsize=16, max_retries=0)
        s.mount("http://", adapter)
        s.mount("https://", adapter)
        s.headers = requests.structures.CaseInsensitiveDict({"User-Agent": USER_AGENT})
        _SESSION = s
    return _SESSION


@dataclass
class Response:
    status: int
    headers: dict[str, str]              # lower-case names
    first_headers: dict[str, str]        # the first answer's (before redirects): X-Linked-Size/-Etag
    url: str                             # the URL that answered
    redirected: bool
    resp: requests.Response
    requests: int = 1                    # requests made for this answer (redirects included)

    def close(self) -> None:
        """Back to the pool when the body was read to its announced end (nothing of it is left on the
        connection); otherwise the connection is closed."""
        try:
            if getattr(self.resp.raw, "length_remaining", None) == 0:
                self.resp.raw.read()            # nothing left: ends the response on its connection
                self.resp.raw.release_conn()
            else:
                self.resp.close()
        except (OSError, urllib3.exceptions.HTTPError):
            pass


class _Retry(Exception):
    """A transient failure: try again (connection, timeout, 5xx, 429)."""


def _status_error(label: str, r: Response) -> HTTPStatusError:
    where = (f" (answered by {printable(urlsplit(r.url).netloc)}, the host a redirect led to)"
             if r.redirected else "")
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
        why = f"HTTP {s} {printable(r.resp.reason or '')[:80]}"
    return HTTPStatusError(f"{label}: {why}{where}", s)


# what this process asked and received over HTTP (the tests measure hostile servers' cost with it)
STATS = {"requests": 0, "bytes": 0}


def request(method: str, url: str, headers: dict[str, str], auth: Auth, label: str) -> Response:
    """One request, redirects followed by hand (their bodies are not read); credentials only to their
    origin. Returns the open response (2xx; the caller reads and closes it)."""
    first: dict[str, str] | None = None
    current = check_url(url, label)
    for hop in range(MAX_REDIRECTS + 1):
        h = {"Accept-Encoding": "identity", **headers, **auth.for_url(current)}
        STATS["requests"] += 1
        try:
            resp = session().request(method, current, headers=h, stream=True, allow_redirects=False,
                                     timeout=(timeout_s(), timeout_s()), auth=_NoNetrc())
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                requests.exceptions.MissingSchema, requests.exceptions.InvalidHeader, ValueError) as e:
            raise PlannerError(f"{label}: cannot request {printable(current)[:200]} "
                               f"({printable(type(e).__name__)})") from None
        except (requests.exceptions.RequestException, OSError, urllib3.exceptions.HTTPError) as e:
            raise _Retry(f"{printable(urlsplit(current).hostname or '')}: {_reason(e)}") from None
        hdrs = {k.lower(): v for k, v in resp.headers.items()}
        if first is None:
            first = hdrs
        r = Response(resp.status_code, hdrs, first, current, hop > 0, resp, hop + 1)
        if resp.status_code in (301, 302, 303, 307, 308):
            loc = hdrs.get("location")
            r.close()
            if not loc:
                raise PlannerError(f"{label}: redirect {resp.status_code} without a Location")
            try:
                nxt = urljoin(current, loc)
            except ValueError:
                raise PlannerError(f"{label}: redirected to an invalid URL ({printable(loc)[:200]})") from None
            if urlsplit(nxt).scheme not in ("http", "https"):
                raise PlannerError(f"{label}: redirected to an unsupported URL scheme "
                                   f"({printable(urlsplit(nxt).scheme)})")
            current = check_url(nxt.replace(" ", "%20"), label)
            continue
        if resp.status_code >= 500 or resp.status_code == 429:
            r.close()
            raise _Retry(f"{printable(urlsplit(current).hostname or '')}: HTTP {resp.status_code} "
                         f"{printable(resp.reason or '')[:80]}")
        if resp.status_code >= 400:
            r.close()
            raise _status_error(label, r)
        enc = hdrs.get("content-encoding", "identity").strip().lower()
        if enc not in ("", "identity"):
            r.close()
            raise PlannerError(f"{label}: the server compressed its answer (Content-Encoding: "
                               f"{printable(enc)[:40]}) although identity was asked for; a compressed body "
                               "is not the file's bytes")
        return r
    raise PlannerError(f"{label}: more than {MAX_REDIRECTS} redirects")


def _reason(e: BaseException) -> str:
    """A short reason for a network failure (never a URL with its query, never a header value)."""
    inner = e
    for _ in range(8):                 # the chain of causes, to the OS error if there is one
        if isinstance(inner, OSError) or inner.__context__ is None:
            break
        inner = inner.__context__
    if isinstance(e, (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError)):
        return "timed out"
    if isinstance(e, requests.exceptions.ProxyError):
        return "the proxy failed"
    if isinstance(e, requests.exceptions.SSLError):
        return "TLS failed (certificate?)"
    text = str(inner) if isinstance(inner, OSError) else type(e).__name__
    if "refused" in str(e).lower():
        text = "connection refused"
    elif "resolve" in str(e).lower() or "name or service" in str(e).lower():
        text = "the host name does not resolve"
    return printable(text)[:120]


def with_retries(label: str, fn):
    """fn() with bounded retries of transient failures; NetworkError when they are spent."""
    n = retries()
    for attempt in range(n + 1):
        try:
            return fn()
        except _Retry as e:
            if isinstance(e, _Truncated) and attempt >= 1:    # short twice: the server's answer, not the network
                raise PlannerError(str(e)) from None
            if attempt == n:
                if isinstance(e, _Truncated):
                    raise PlannerError(str(e)) from None
                raise NetworkError(f"{label}: network failure after {n + 1} attempts: {e}") from None
            time.sleep(min(0.2 * 2 ** attempt, 2.0))


class _Deadline:
    """The time one file's header read may take (DQ_PLANNER_HTTP_DEADLINE)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.limit = deadline_s()
        self.start = time.monotonic()

    def check(self, received: int) -> None:
        spent = time.monotonic() - self.start
        if spent > self.limit:
            raise NetworkError(f"{self.label}: not read within {self.limit:g} s (DQ_PLANNER_HTTP_DEADLINE): "
                               f"{human(received)} received at {received / max(spent, 1e-9):.0f} B/s")


def _read_body(r: Response, limit: int, label: str, progress: Progress | None, expected: int | None,
               deadline: _Deadline | None = None) -> bytes:
    """At most `limit` bytes of the body; fewer than `expected` (the announced length) is truncation.
    The connection is reused when the body was read to its end."""
    out = bytearray()
    raw = r.resp.raw
    try:
        while len(out) < limit:
            piece = raw.read1(min(_PIECE, limit - len(out)), decode_content=False)
            if not piece:
                break
            out += piece
            STATS["bytes"] += len(piece)
            if progress is not None:
                progress.add(len(piece))
            if deadline is not None:
                deadline.check(len(out))
    except (urllib3.exceptions.ProtocolError, urllib3.exceptions.IncompleteRead) as e:
        r.close()
        if expected is not None or "IncompleteRead" in repr(e):
            raise _Truncated(f"{label}: truncated response: the server announced {expected} bytes and sent "
                             f"{len(out)}") from None
        raise _Retry(f"{printable(urlsplit(r.url).hostname or '')}: connection broken after {len(out)} bytes") from None
    except (OSError, urllib3.exceptions.HTTPError, requests.exceptions.RequestException) as e:
        r.close()
        raise _Retry(f"{printable(urlsplit(r.url).hostname or '')}: {_reason(e)} after {len(out)} bytes") from None
    except BaseException:
        r.close()
        raise
    if expected is not None and len(out) < min(expected, limit):
        r.close()
        raise _Truncated(f"{label}: truncated response: the server announced {expected} bytes and sent {len(out)}")
    r.close()
    return bytes(out)


class _Truncated(_Retry):
    """A body shorter than announced: retried once, then a bad-input error (exit 2), not a network one."""


def fetch_all(url: str, auth: Auth, label: str, limit: int = 64 << 20, accept: str | None = None,
              box: dict | None = None) -> bytes:
    """A small whole file (config.json, an index, a listing page); refused above `limit` bytes. box,
    when given, receives the answer's headers."""
    def once() -> bytes:
        r = request("GET", url, {"Accept": accept} if accept else {}, auth, label)
        try:
            if box is not None:
                box["headers"] = r.headers
            n = header_int(r.headers.get("content-length"), "Content-Length", label)
            if n is not None and n > limit:
                raise PlannerError(f"{label}: {n} bytes, more than the {limit} read for a small file")
            data = _read_body(r, limit + 1, label, None, n)
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
    raw = fetch_all(url, auth, label, limit, accept="application/json", box=box)
    try:
        return json.loads(raw.decode("utf-8")), box.get("headers", {})
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise PlannerError(f"{label}: not valid JSON ({printable(e)[:200]})") from None


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
    magic: bytes = b""                   # what the file starts with (a cache entry must too)
    use_cache: bool = True               # False: the cache entry is not read (it is still written)
    size: int = -1
    etag: str = ""                       # the validator of the cache key (the hub's X-Linked-Etag first)
    body_etag: str = ""                  # the ETag of the server that sends the bytes (If-Range)
    ranges: bool = True                  # False: the server answered a ranged GET with 200
    buf: bytearray = field(default_factory=bytearray)   # bytes [0, len) known (cached or read)
    cached: int = 0                      # of which are in the cache
    from_cache: int = 0                  # of which were read from the cache
    sent: int = 0                        # bytes received over the network for this file
    requests: int = 0                    # HTTP requests made for this file (redirects included)
    reads: int = 0                       # ranged reads after the probe
    chunk: int = 0                       # the next ranged read's size (grows)
    last_modified: str = ""
    changed: bool = False                # the file changed while it was read: nothing is cached
    _cache_key: str = ""
    _deadline: _Deadline | None = None

    def __post_init__(self) -> None:
        self.label = printable(self.label)
        self.chunk = self.first_chunk

    def open(self) -> "RemoteFile":
        """The probe: size and ETag (X-Linked-* of the hub's redirect first), then the cache entry."""
        self._deadline = _Deadline(self.label)

        def once() -> None:
            r = request("GET", self.url, {"Range": "bytes=0-0"}, self.auth, self.label)
            self.requests += r.requests
            try:
                h, first = r.headers, r.first_headers
                size = header_int(first.get("x-linked-size"), "X-Linked-Size", self.label)
                etag = first.get("x-linked-etag") or h.get("etag", "")
                self.body_etag = h.get("etag", "").strip()
                if r.status == 206:
                    a, b, total = _content_range(h.get("content-range", ""), self.label)
                    if a != 0 or b != 0:
                        raise PlannerError(f"{self.label}: asked for byte 0, the server sent bytes {a}-{b}")
                    size = size if size is not None else total
                    self.sent += len(_read_body(r, 1, self.label, None, 1, self._deadline))
                elif r.status == 200:          # Range ignored: the first chunk of the body, no more
                    self.ranges = False
                    if size is None:
                        size = header_int(h.get("content-length"), "Content-Length", self.label)
                    if size is not None:
                        n = min(size, self.first_chunk)
                        self.buf = bytearray(_read_body(r, n, self.label, self.progress, n, self._deadline))
                        self.sent += len(self.buf)
                else:
                    raise PlannerError(f"{self.label}: unexpected HTTP {r.status} to a ranged GET")
                if size is None:
                    raise PlannerError(f"{self.label}: the server does not say the file's size")
                self.size = size
                self.etag = printable(etag.strip())
                self.last_modified = printable(h.get("last-modified", ""))
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
        if not self.use_cache:
            return
        path = d / f"{self._cache_key}.bin"
        data = _read_entry(path, self._cache_key, min(self.size, MAX_HEADER_BYTES))
        if data is None:
            return
        if not data.startswith(self.magic[:len(data)]) or (self.buf and not data.startswith(bytes(self.buf[:len(data)]))):
            data = None
        if data is None:
            _discard(path)
            return
        if len(self.buf) < len(data):
            self.buf = bytearray(data)
            self.cached = self.from_cache = len(data)

    def save_cache(self) -> None:
        d = cache_dir()
        if d is None or not self._cache_key or len(self.buf) <= self.cached or self.changed:
            return
        if self.magic and not self.buf.startswith(self.magic):
            return                              # not the file the caller reads: keep nothing
        tmp = None
        try:
            d.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".part-", dir=d)
            with os.fdopen(fd, "wb") as f:
                f.write(_CACHE_TAG + bytes.fromhex(self._cache_key) + hashlib.sha256(self.buf).digest())
                f.write(self.buf)
            os.replace(tmp, d / f"{self._cache_key}.bin")
            self.cached = len(self.buf)
        except OSError:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    def discard_cache(self) -> None:
        """Forget this file's cache entry (its bytes were found unreadable)."""
        d = cache_dir()
        if d is not None and self._cache_key:
            _discard(d / f"{self._cache_key}.bin")

    # -- ranged reads ----------------------------------------------------------------------------
    def ensure(self, end: int) -> None:
        """Bytes [0, end) in buf (end clamped to the size), fetched in growing ranged reads."""
        end = min(end, self.size)
        if end > MAX_HEADER_BYTES:
            raise PlannerError(f"{self.label}: a header of more than {human(MAX_HEADER_BYTES)} is not plausible; "
                               "stopped reading")
        while len(self.buf) < end:
            start = len(self.buf)
            stop = min(start + max(end - start, self.chunk), self.size)
            self._fetch(start, stop)
            self.chunk = min(self.chunk * 2, MAX_CHUNK)

    def _fetch(self, start: int, stop: int) -> None:
        if not self.ranges:
            raise PlannerError(
                f"{self.label}: the server ignores Range requests (it answers with the whole {human(self.size)} "
                f"file), so only the first {human(len(self.buf))} were read; the header needs more. "
                "Not downloading the file: use a server or mirror that supports ranged reads")
        self.reads += 1
        if self.reads > MAX_RANGE_READS:
            raise PlannerError(f"{self.label}: more than {MAX_RANGE_READS} ranged reads for one header "
                               f"({human(len(self.buf))} so far); stopped")

        def once() -> None:
            if self._deadline is not None:
                self._deadline.check(self.sent)
            hdrs = {"Range": f"bytes={start}-{stop - 1}"}
            if self.body_etag and not self.body_etag.startswith("W/") and start > 0:
                hdrs["If-Range"] = self.body_etag
            r = request("GET", self.url, hdrs, self.auth, self.label)
            self.requests += r.requests
            try:
                h = r.headers
                etag = h.get("etag", "").strip()
                if r.status == 200:
                    if start != 0:
                        self.changed = True
                        raise PlannerError(
                            f"{self.label}: the server sent the whole file for bytes {start}-{stop - 1}"
                            + (" (its ETag no longer matches: the file changed while it was read)"
                               if "If-Range" in hdrs else " (it ignored the Range)") + "; not downloading it")
                    # Range ignored: keep at most the first chunk of the body and stop there
                    self.ranges = False
                    data = _read_body(r, min(stop, self.first_chunk), self.label, self.progress, None, self._deadline)
                    self.sent += len(data)
                    self.buf = bytearray(data)
                    return
                if r.status != 206:
                    raise PlannerError(f"{self.label}: unexpected HTTP {r.status} to a ranged GET")
                if self.body_etag and etag and etag != self.body_etag:
                    self.changed = True
                    raise PlannerError(f"{self.label}: the file changed while it was read (ETag "
                                       f"{printable(self.body_etag)[:60]}, now {printable(etag)[:60]}); "
                                       "nothing was kept: run again")
                a, b, total = _content_range(h.get("content-range", ""), self.label)
                if a != start:
                    raise PlannerError(f"{self.label}: asked for bytes from {start}, the server sent from {a}")
                if total is not None and total != self.size:
                    self.changed = True
                    raise PlannerError(f"{self.label}: the file changed while it was read "
                                       f"({self.size} bytes, now {total})")
                if b > stop - 1:
                    raise PlannerError(f"{self.label}: asked for bytes {start}-{stop - 1}, the server announced "
                                       f"{a}-{b}; not reading past the range asked")
                n = b - a + 1
                if n < min(stop - start, MIN_PROGRESS):
                    raise PlannerError(f"{self.label}: asked for {stop - start} bytes from {start}, the server "
                                       f"sends {max(n, 0)}; stopped (every read must make progress)")
                length = header_int(h.get("content-length"), "Content-Length", self.label)
                if length is not None and length != n:
                    raise PlannerError(f"{self.label}: Content-Length {length} disagrees with Content-Range "
                                       f"{a}-{b} ({n} bytes)")
                data = _read_body(r, n, self.label, self.progress, n, self._deadline)
                self.sent += len(data)
                self.buf += data
            finally:
                r.close()
        with_retries(self.label, once)

    def reader(self) -> "RangeReader":
        return RangeReader(self)


def _read_entry(path: Path, key: str, max_bytes: int) -> bytes | None:
    """A cache entry's bytes when it is a regular file (links are not followed, nothing blocks) of a
    plausible size, with this key and a matching checksum; None otherwise (a bad entry is removed)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError:                          # a link (ELOOP), no permission ...
        _discard(path)
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not _CACHE_HEAD < st.st_size <= _CACHE_HEAD + max_bytes:
            raise ValueError
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(_CACHE_HEAD + max_bytes + 1)
        tag, k, digest, data = (raw[:len(_CACHE_TAG)], raw[len(_CACHE_TAG):len(_CACHE_TAG) + 32],
                                raw[len(_CACHE_TAG) + 32:_CACHE_HEAD], raw[_CACHE_HEAD:])
        if tag != _CACHE_TAG or k != bytes.fromhex(key) or hashlib.sha256(data).digest() != digest:
            raise ValueError
        return data
    except (OSError, ValueError):
        _discard(path)
        return None
    finally:
        os.close(fd)


def _discard(path: Path) -> None:
    try:
        os.unlink(path)                      # the entry itself (a link, not its target)
    except OSError:
        pass


def _content_range(v: str, label: str) -> tuple[int, int, int | None]:
    """'bytes A-B/TOTAL' (TOTAL may be '*'), A <= B, digits only."""
    m = re.fullmatch(r"bytes ([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19}|\*)", v.strip())
    if not m or int(m[1]) > int(m[2]):
        raise PlannerError(f"{label}: a 206 answer without a valid Content-Range ({printable(v)[:80]!r})")
    return int(m[1]), int(m[2]), None if m[3] == "*" else int(m[3])


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
