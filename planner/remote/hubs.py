"""Where published files are: plain URLs, Hugging Face (hf://) and ModelScope (ms://) repositories.

    hf://OWNER/REPO[@REVISION]/PATH   a file: {HF_ENDPOINT}/OWNER/REPO/resolve/REVISION/PATH (REVISION: main)
    hf://OWNER/REPO[@REVISION]        a repository: its files from the tree API,
                                      {HF_ENDPOINT}/api/models/OWNER/REPO/tree/REVISION?recursive=true
                                      (pages followed through the Link header), as HfApi.list_repo_tree
    ms://OWNER/REPO[@REVISION]/PATH   {endpoint}/api/v1/models/OWNER/REPO/repo?Revision=REVISION&FilePath=PATH
                                      (REVISION: master), as the modelscope package's get_file_download_url
    ms://OWNER/REPO[@REVISION]        {endpoint}/api/v1/models/OWNER/REPO/repo/files?Revision=REVISION&Recursive=True
                                      ({"Code": 200, "Data": {"Files": [{"Path", "Size", "Type"}]}})

Endpoints and credentials: HF_ENDPOINT [https://huggingface.co] and HF_TOKEN (else HUGGING_FACE_HUB_TOKEN,
else the token file huggingface_hub writes: $HF_TOKEN_PATH, $HF_HOME/token, ~/.cache/huggingface/token),
sent as `Authorization: Bearer`; ModelScope: MODELSCOPE_ENDPOINT (a URL), else MODELSCOPE_URL_SCHEME
[https://] + MODELSCOPE_DOMAIN [www.modelscope.cn] as the modelscope package builds it, and
MODELSCOPE_API_TOKEN, sent as `Authorization: Bearer` and the `m_session_id` cookie the site uses.
A token goes only to its endpoint's origin (scheme, host, port): never to a CDN a download redirects to,
never to another URL. A plain https:// URL on an endpoint's host gets that endpoint's token.

A GGUF "set" in a repository is one file, or the shards NAME-0000i-of-0000N.gguf of one folder; --quant
NAME picks the set whose path contains NAME as a whole word (case ignored; a folder or file name equal to
NAME wins over a longer one that contains it).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import quote, quote_plus, unquote, urlsplit, urlunsplit

from planner.core.ggml.shards import SPLIT_RE, shard_names
from planner.errors import PlannerError
from planner.remote.client import Auth, NO_AUTH, check_url, fetch_json_with_headers, origin
from planner.safe_text import printable

HF_DEFAULT = "https://huggingface.co"
MS_DEFAULT_DOMAIN = "www.modelscope.cn"
MAX_LISTING_PAGES = 200


def hf_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or HF_DEFAULT).rstrip("/")


def ms_endpoint() -> str:
    ep = os.environ.get("MODELSCOPE_ENDPOINT")
    if ep:
        return ep.rstrip("/")
    scheme = os.environ.get("MODELSCOPE_URL_SCHEME") or "https://"
    return (scheme + (os.environ.get("MODELSCOPE_DOMAIN") or MS_DEFAULT_DOMAIN)).rstrip("/")


def _checked_token(tok: str, where: str) -> str | None:
    """A token as one line of visible ASCII (what an HTTP header can carry): else one line naming where
    it came from and what is wrong, never the token itself."""
    tok = tok.strip()
    if not tok:
        return None
    if "\n" in tok or "\r" in tok:
        why = f"holds {tok.count(chr(10)) + 1} lines (a line break)"
    elif not tok.isascii():
        why = "holds a non-ASCII character"
    elif not re.fullmatch(r"[\x21-\x7e]+", tok):
        why = "holds a space or a control character"
    else:
        return tok
    raise PlannerError(f"the token from {where} {why}; a token is one line of visible ASCII characters "
                       "(the token is not shown)")


def hf_home() -> str:
    """huggingface_hub's HF_HOME: $HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface."""
    return os.path.expanduser(os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"))


def _env_flag(name: str) -> bool:
    """huggingface_hub's reading of a boolean variable: 1, ON, YES, TRUE (any case)."""
    return os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hf_offline() -> bool:
    return _env_flag("HF_HUB_OFFLINE")


def hf_token() -> str | None:
    """The token as huggingface_hub finds it: HF_TOKEN, HUGGING_FACE_HUB_TOKEN, then the token file
    ($HF_TOKEN_PATH, else $HF_HOME/token); none at all with HF_HUB_DISABLE_IMPLICIT_TOKEN."""
    if _env_flag("HF_HUB_DISABLE_IMPLICIT_TOKEN"):
        return None
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if os.environ.get(name):
            return _checked_token(os.environ[name], f"${name}")
    path = os.path.expanduser(os.environ.get("HF_TOKEN_PATH") or os.path.join(hf_home(), "token"))
    if not os.path.lexists(path):
        return None
    from planner.core.data_files import open_regular

    with open_regular(path, "the token file") as f:     # a FIFO or a device is refused, never read
        try:
            raw = f.read(4096)
        except OSError as e:
            raise PlannerError(f"the token file {path}: cannot read ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PlannerError(f"the token from the file {path} is not UTF-8 text (the token is not shown)") from None
    return _checked_token(text, f"the file {path}")


def hf_auth() -> Auth:
    tok = hf_token()
    return Auth(origin(hf_endpoint()), (("Authorization", f"Bearer {tok}"),)) if tok else NO_AUTH


def ms_auth() -> Auth:
    tok = _checked_token(os.environ.get("MODELSCOPE_API_TOKEN") or "", "$MODELSCOPE_API_TOKEN")
    if not tok:
        return NO_AUTH
    return Auth(origin(ms_endpoint()), (("Authorization", f"Bearer {tok}"), ("Cookie", f"m_session_id={tok}")))


@dataclass(frozen=True)
class Location:
    kind: str                 # "url" | "hf" | "ms"
    spec: str                 # as given
    repo: str = ""            # OWNER/REPO
    revision: str = ""        # decoded (refs/pr/1)
    path: str = ""            # a file (or folder) in the repository; "" for the repository itself
    repo_type: str = "models"  # hf: models | datasets | spaces

    @property
    def is_repo(self) -> bool:
        return self.kind != "url" and not self.path

    @property
    def _prefix(self) -> str:
        return "" if self.repo_type == "models" else f"{self.repo_type}/"

    def display(self, path: str) -> str:
        """How a file of this repository is named in messages and documents (hf://OWNER/REPO/PATH)."""
        rev = "" if self.revision == default_revision(self.kind) else f"@{self.revision}"
        return f"{self.kind}://{self._prefix}{self.repo}{rev}/{path}"

    def url(self, path: str | None = None) -> str:
        """The download URL of a file (hub resolve URLs; their redirects are followed when read)."""
        if self.kind == "url":
            return self.spec
        path = self.path if path is None else path
        if self.kind == "hf":
            return (f"{hf_endpoint()}/{self._prefix}{self.repo}/resolve/{quote(self.revision, safe='')}/"
                    f"{quote(path)}")
        return (f"{ms_endpoint()}/api/v1/models/{self.repo}/repo?Revision={quote_plus(self.revision)}"
                f"&FilePath={quote_plus(path)}")

    def tree_url(self) -> str:
        """The Hugging Face tree API of the repository (HfApi.list_repo_tree)."""
        return (f"{hf_endpoint()}/api/{self.repo_type}/{self.repo}/tree/{quote(self.revision, safe='')}"
                "?recursive=true")

    def auth(self) -> Auth:
        if self.kind == "hf":
            return hf_auth()
        if self.kind == "ms":
            return ms_auth()
        o = origin(self.spec)
        if o == origin(hf_endpoint()):
            return hf_auth()
        if o == origin(ms_endpoint()):
            return ms_auth()
        return NO_AUTH


def default_revision(kind: str) -> str:
    return "master" if kind == "ms" else "main"


_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
# revisions holding slashes, as huggingface_hub's file system recognises them (hf://OWNER/REPO@refs/pr/1/PATH)
_SLASHED_REVISION = re.compile(r"^(refs/convert/[\w.-]+|refs/pr/\d+)(?=/|$)")
REPO_TYPES = ("datasets", "spaces")


def parse(spec: str) -> Location:
    """A URL or hf:// / ms:// location (PlannerError for anything else). hf:// takes huggingface_hub's
    file system spelling: hf://[datasets/|spaces/]OWNER/REPO[@REVISION][/PATH], a revision such as
    refs/pr/1 or refs/convert/parquet written as it is or percent-encoded (refs%2Fpr%2F1)."""
    if any(c.isspace() for c in spec) or printable(spec) != spec:
        raise PlannerError(f"{printable(spec)}: a URL or repository name cannot hold spaces or control "
                           "characters (write a space as %20)")
    scheme = spec.split("://", 1)[0].lower()
    if scheme in ("http", "https"):
        check_url(spec)
        return Location("url", spec)
    if scheme not in ("hf", "ms"):
        raise PlannerError(f"{spec}: unsupported URL scheme '{scheme}'; use https://, http://, "
                           "hf://OWNER/REPO[/PATH] or ms://OWNER/REPO[/PATH]")
    if scheme == "hf" and hf_offline():
        raise PlannerError(f"{spec}: HF_HUB_OFFLINE is set, so the hub is not asked; unset it to read "
                           "the header remotely, or give a local file")
    rest = spec.split("://", 1)[1].strip("/")
    repo_type = "models"
    if scheme == "hf":
        head = rest.split("/", 1)[0]
        if head in REPO_TYPES or head == "models":
            repo_type = head
            rest = rest.split("/", 1)[1] if "/" in rest else ""
    parts = rest.split("/")
    if len(parts) < 2:
        raise PlannerError(f"{spec}: expected {scheme}://OWNER/REPO[/PATH]")
    owner, repo = parts[0], parts[1]
    revision = default_revision(scheme)
    tail = parts[2:]
    if "@" in repo:
        repo, revision = repo.split("@", 1)
        m = _SLASHED_REVISION.match("/".join([revision] + tail))
        if m and revision in ("refs",):
            revision = m.group(1)
            tail = tail[revision.count("/"):]
        revision = unquote(revision)
    if not _PART.match(owner) or not _PART.match(repo) or not revision or ".." in tail \
            or ".." in revision.split("/"):
        raise PlannerError(f"{spec}: expected {scheme}://OWNER/REPO[@REVISION][/PATH]")
    return Location(scheme, spec, f"{owner}/{repo}", revision, "/".join(p for p in tail if p), repo_type)


# ---------------------------------------------------------------------------------------------------
# Listing a repository
# ---------------------------------------------------------------------------------------------------

def list_files(loc: Location) -> list[tuple[str, int]]:
    """(path, size) of every file of the repository (folders recursed)."""
    label = f"{loc.kind}://{loc.repo}"
    if loc.kind == "hf":
        url = loc.tree_url()
        out: list[tuple[str, int]] = []
        for _ in range(MAX_LISTING_PAGES):
            data, headers = fetch_json_with_headers(url, loc.auth(), f"{label} (file list)")
            if not isinstance(data, list):
                raise PlannerError(f"{label}: the tree API answered {type(data).__name__}, expected a list")
            for e in data:
                if isinstance(e, dict) and e.get("type") == "file" and isinstance(e.get("path"), str):
                    size = e["lfs"].get("size", e.get("size", 0)) if isinstance(e.get("lfs"), dict) \
                        else e.get("size", 0)
                    out.append((e["path"], _size(size, e["path"], label)))
            nxt = _next_link(headers.get("link", ""))
            if not nxt:
                return out
            url = nxt if "://" in nxt else f"{hf_endpoint()}{nxt}"
            if origin(url) != origin(hf_endpoint()):
                raise PlannerError(f"{label}: the tree API's next page is on another host ({urlsplit(url).hostname})")
        raise PlannerError(f"{label}: more than {MAX_LISTING_PAGES} pages of files")
    if loc.kind == "ms":
        url = (f"{ms_endpoint()}/api/v1/models/{loc.repo}/repo/files?Revision={quote_plus(loc.revision)}"
               "&Recursive=True")
        data, _ = fetch_json_with_headers(url, loc.auth(), f"{label} (file list)")
        if not isinstance(data, dict) or data.get("Code", 200) != 200 or data.get("Success") is False:
            msg = data.get("Message") if isinstance(data, dict) else None
            raise PlannerError(f"{label}: ModelScope's file list failed" + (f": {printable(msg)[:200]}" if msg else ""))
        d = data.get("Data")
        files = (d.get("Files") if isinstance(d, dict) else None) or []
        if not isinstance(files, list):
            raise PlannerError(f"{label}: ModelScope's file list is not a list")
        return [(f["Path"], _size(f.get("Size") or 0, f["Path"], label)) for f in files
                if isinstance(f, dict) and f.get("Type") != "tree" and isinstance(f.get("Path"), str)]
    raise PlannerError(f"{loc.spec}: a plain URL has no file list; name the file")


def _size(v: object, path: str, label: str) -> int:
    """A listed file's size: an integer byte count below 2^63 (a bool, a float, text or a list is an
    error naming the file)."""
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 63:
        return v
    raise PlannerError(f"{label}: the file list gives {printable(path)[:120]} a size of "
                       f"{printable(repr(v))[:40]}, not a byte count")


def _next_link(link: str) -> str | None:
    for part in link.split(","):
        m = re.match(r'\s*<([^>]+)>\s*;\s*rel="?next"?', part)
        if m:
            return m.group(1)
    return None


# ---------------------------------------------------------------------------------------------------
# GGUF sets
# ---------------------------------------------------------------------------------------------------

def gguf_sets(files: list[tuple[str, int]]) -> dict[str, list[str]]:
    """Set name (folder/prefix, without the shard suffix) -> its files in shard order."""
    sets: dict[str, list[tuple[int, str]]] = {}
    counts: dict[str, int] = {}
    for path, _ in files:
        name = path.rsplit("/", 1)[-1]
        if not name.lower().endswith(".gguf") or "mmproj" in name.lower():
            continue
        folder = path[: -len(name)]
        m = SPLIT_RE.match(name)
        if m:
            key = folder + m["prefix"]
            sets.setdefault(key, []).append((int(m["no"]), path))
            counts[key] = int(m["count"])
        else:
            sets.setdefault(folder + name[:-5], []).append((1, path))
    out = {}
    for key, items in sets.items():
        items.sort()
        out[key] = [p for _, p in items]
        if key in counts and len(items) != counts[key]:
            out[key] = out[key] + [f"<missing: {len(items)} of {counts[key]} shards listed>"]
    return out


def choose_gguf_set(loc: Location, files: list[tuple[str, int]], quant: str | None) -> list[str]:
    sets = gguf_sets(files)
    if loc.path:                       # a folder of the repository
        sets = {k: v for k, v in sets.items() if k.startswith(loc.path.rstrip("/") + "/")}
    label = loc.spec + (f" --quant {quant}" if quant else "")
    if not sets:
        raise PlannerError(f"{loc.spec}: no GGUF files" + (f" under {loc.path}" if loc.path else "")
                           + " in this repository")
    names = sorted(sets)
    if quant:
        pat = re.compile(rf"(?<![A-Za-z0-9_]){re.escape(quant)}(?![A-Za-z0-9_])", re.I)
        found = [k for k in names if pat.search(k)]
        exact = [k for k in found if any(c.lower() == quant.lower() for c in k.split("/"))]
        if len(found) > 1 and len(exact) == 1:
            found = exact
        if not found:
            raise PlannerError(f"{label}: no GGUF set matches; sets: {_list(names)}")
        if len(found) > 1:
            raise PlannerError(f"{label}: {len(found)} GGUF sets match ({_list(found)}); give a longer --quant")
        chosen = sets[found[0]]
    else:
        if len(names) > 1:
            raise PlannerError(f"{loc.spec}: {len(names)} GGUF sets in this repository; choose one with "
                               f"--quant NAME: {_list(names)}")
        chosen = sets[names[0]]
    bad = [p for p in chosen if p.startswith("<missing")]
    if bad:
        raise PlannerError(f"{label}: the repository {bad[0][1:-1]}")
    return chosen


def _list(names: list[str], limit: int = 12) -> str:
    short = [n.rsplit("/", 1)[-1] if n.count("/") else n for n in names]
    return ", ".join(short[:limit]) + (f" and {len(short) - limit} more" if len(short) > limit else "")


def sibling_shards(name: str) -> list[str] | None:
    """All shard names of a split set from one shard's URL or hf:// / ms:// name (the query kept)."""
    if "://" in name and name.split("://", 1)[0].lower() in ("http", "https"):
        u = urlsplit(name)
        folder, _, last = u.path.rpartition("/")
        names = shard_names(last)
        return None if names is None else [urlunsplit((u.scheme, u.netloc, f"{folder}/{n}", u.query, ""))
                                           for n in names]
    folder, _, last = name.rpartition("/")
    names = shard_names(last)
    return None if names is None else [f"{folder}/{n}" for n in names]
