"""Published files read remotely: only header bytes move (planner/remote, planner/gguf/remote.py).

Local HTTP servers on 127.0.0.1 only (threads of http.server, each stopped by its fixture and by a
watchdog): one emulating the Hugging Face hub (the tree API /api/models/OWNER/REPO/tree/REV?recursive=true
in pages joined by a Link header, resolve/REV/PATH redirecting large files to a second server, the CDN,
with X-Linked-Size / X-Linked-Etag as the hub sends them), one emulating ModelScope
(/api/v1/models/OWNER/REPO/repo/files and /repo?Revision=&FilePath=), and plain file servers: without
Range support, slow, stalling, truncating. Every server counts the body bytes it sent.

The full-size case: DeepSeek-R1 Q4_K_M as 9 sparse shards (about 400 GB apparent, a few MB on disk)
planned through hf:// with the same figures as the local files, under 64 MiB sent in all and under 1 MiB
on a second run (the header cache).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

import numpy as np
import pytest

from planner.cli import main as cli_main
from planner.core.catalog import catalog
from planner.core.llamacpp.schemes import resolve_scheme
from planner.core.llamacpp.sizing import resolve_catalog_model, size_scheme
from planner.gguf.remote import clear_memo
from planner.gguf.writer import _check_rows, _prepare, _Writer, write_metadata
from planner.core.ggml.tensor_types import tensor_bytes
from gguf import GGUFWriter

MIB = 1 << 20
WATCHDOG_S = 300                # no server outlives this, whatever happens to a test
TOKEN = "hf_test_token_123"
MS_TOKEN = "ms_test_token_456"


# ---------------------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------------------

class Site(ThreadingHTTPServer):
    """A server on 127.0.0.1 with a route function, counting the body bytes it sends."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, route) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.route = route
        self.lock = threading.Lock()
        self.sent = 0
        self.log: list[dict] = []
        self.no_range = False
        self.delay = 0.0             # seconds per 64 KiB piece
        self.stall_after: int | None = None   # body bytes after which the response stalls
        self.truncate: int | None = None      # body bytes after which the connection closes
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.watchdog = threading.Timer(WATCHDOG_S, self.shutdown)
        self.watchdog.daemon = True

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> "Site":
        self.thread.start()
        self.watchdog.start()
        return self

    def stop(self) -> None:
        self.watchdog.cancel()
        self.shutdown()
        self.server_close()
        self.thread.join(10)

    def reset(self) -> None:
        with self.lock:
            self.sent = 0
            self.log.clear()

    def count(self, n: int) -> None:
        with self.lock:
            self.sent += n


class _Handler(BaseHTTPRequestHandler):
    timeout = 20

    def log_message(self, *a) -> None:       # quiet
        pass

    def do_GET(self) -> None:
        self._do()

    def do_HEAD(self) -> None:
        self._do()

    def _do(self) -> None:
        site: Site = self.server  # type: ignore[assignment]
        u = urlsplit(self.path)
        with site.lock:
            site.log.append({"method": self.command, "path": u.path, "range": self.headers.get("Range"),
                             "authorization": self.headers.get("Authorization"),
                             "cookie": self.headers.get("Cookie")})
        try:
            site.route(self, unquote(u.path), parse_qs(u.query))
        except (BrokenPipeError, ConnectionResetError):
            pass

    # helpers for routes
    def send_json(self, obj, status: int = 200, headers: dict | None = None) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
            self.server.count(len(body))  # type: ignore[attr-defined]

    def send_status(self, status: int, text: str = "") -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
            self.server.count(len(body))  # type: ignore[attr-defined]

    def send_file(self, path: Path, headers: dict | None = None) -> None:
        site: Site = self.server  # type: ignore[assignment]
        size = path.stat().st_size
        etag = '"' + hashlib.sha1(f"{path.name}:{size}:{path.stat().st_mtime_ns}".encode()).hexdigest() + '"'
        rng = self.headers.get("Range")
        start, length, status = 0, size, 200
        if rng and not site.no_range:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            if m:
                start = int(m[1])
                end = min(int(m[2]) if m[2] else size - 1, size - 1)
                if start >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                length, status = end - start + 1, 206
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        self.send_header("ETag", etag)
        if not site.no_range:
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{start + length - 1}/{size}")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        sent = 0
        with open(path, "rb") as f:
            f.seek(start)
            while sent < length:
                if site.truncate is not None and sent >= site.truncate:
                    self.close_connection = True
                    return
                if site.stall_after is not None and sent >= site.stall_after:
                    time.sleep(3)
                    return
                n = min(65536, length - sent)
                if site.truncate is not None:
                    n = min(n, site.truncate - sent)
                piece = f.read(n)
                self.wfile.write(piece)
                sent += len(piece)
                site.count(len(piece))
                if site.delay:
                    time.sleep(site.delay)


def _etag(path: Path) -> str:
    return hashlib.sha1(f"{path.name}:{path.stat().st_size}".encode()).hexdigest()


class Hub:
    """The Hugging Face hub (tree + resolve) and its CDN, two servers. repos: {"OWNER/REPO": {path: Path}};
    private: repos that need the token. Files over 1 MiB are "LFS": resolve redirects them to the CDN."""

    PAGE = 4

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, Path]] = {}
        self.private: set[str] = set()
        self.expired = False          # redirects with a link the CDN refuses (403)
        self.cdn_files: dict[str, Path] = {}
        self.cdn = Site(self._cdn).start()
        self.hub = Site(self._hub).start()

    def add(self, repo: str, files: dict[str, Path], private: bool = False) -> None:
        self.repos.setdefault(repo, {}).update(files)
        for p in files.values():
            self.cdn_files[_etag(p)] = p
        if private:
            self.private.add(repo)

    def sent(self) -> int:
        return self.hub.sent + self.cdn.sent

    def reset(self) -> None:
        self.hub.reset()
        self.cdn.reset()

    def stop(self) -> None:
        self.hub.stop()
        self.cdn.stop()

    def _cdn(self, h: _Handler, path: str, q) -> None:
        key = path.rsplit("/", 1)[-1]
        if "sig" not in q or key not in self.cdn_files:
            return h.send_status(403, "signature")
        h.send_file(self.cdn_files[key])

    def _auth(self, h: _Handler, repo: str) -> bool:
        if repo in self.private and h.headers.get("Authorization") != f"Bearer {TOKEN}":
            h.send_json({"error": "Invalid credentials"}, 401)
            return False
        return True

    def _hub(self, h: _Handler, path: str, q) -> None:
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)", path)
        if m:
            repo = m[1]
            if repo not in self.repos:
                return h.send_json({"error": "Repository not found"}, 404)
            if not self._auth(h, repo):
                return
            files = self.repos[repo]
            folders = sorted({p.rsplit("/", 1)[0] for p in files if "/" in p})
            entries = [{"type": "directory", "oid": "0" * 40, "path": d} for d in folders]
            for p, f in sorted(files.items()):
                size = f.stat().st_size
                e = {"type": "file", "oid": _etag(f)[:40], "size": size, "path": p}
                if size > MIB:
                    e["lfs"] = {"oid": _etag(f), "size": size, "pointerSize": 134}
                entries.append(e)
            cursor = int(q.get("cursor", ["0"])[0])
            page = entries[cursor:cursor + self.PAGE]
            headers = {}
            if cursor + self.PAGE < len(entries):
                headers["Link"] = f'<{self.hub.base}/api/models/{repo}/tree/{m[2]}?recursive=true&cursor={cursor + self.PAGE}>; rel="next"'
            return h.send_json(page, 200, headers)
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m and m[1] in self.repos:
            if not self._auth(h, m[1]):
                return
            f = self.repos[m[1]].get(m[3])
            if f is None:
                return h.send_json({"error": "Entry not found"}, 404)
            if f.stat().st_size > MIB:
                h.send_response(302)
                h.send_header("Location", f"{self.cdn.base}/cdn/{_etag(f)}" + ("" if self.expired else "?sig=abc"))
                h.send_header("X-Linked-Size", str(f.stat().st_size))
                h.send_header("X-Linked-Etag", f'"{_etag(f)}"')
                h.send_header("ETag", '"pointer"')
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            return h.send_file(f)
        h.send_json({"error": "Repository not found"}, 404)


class ModelScope:
    """ModelScope's file list and download API, large files redirected to a second server (its OSS)."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, Path]] = {}
        self.private: set[str] = set()
        self.oss = Site(self._oss).start()
        self.api = Site(self._api).start()
        self.keys: dict[str, Path] = {}

    def add(self, repo: str, files: dict[str, Path], private: bool = False) -> None:
        self.repos.setdefault(repo, {}).update(files)
        for p in files.values():
            self.keys[_etag(p)] = p
        if private:
            self.private.add(repo)

    def stop(self) -> None:
        self.api.stop()
        self.oss.stop()

    def _oss(self, h: _Handler, path: str, q) -> None:
        key = path.rsplit("/", 1)[-1]
        if key not in self.keys:
            return h.send_status(404)
        h.send_file(self.keys[key])

    def _api(self, h: _Handler, path: str, q) -> None:
        m = re.fullmatch(r"/api/v1/models/([^/]+/[^/]+)/repo(/files)?", path)
        if not m or m[1] not in self.repos:
            return h.send_json({"Code": 10010205001, "Message": "model not found", "Success": False}, 404)
        repo = m[1]
        if repo in self.private and h.headers.get("Cookie") != f"m_session_id={MS_TOKEN}":
            return h.send_json({"Code": 10010205001, "Message": "no permission", "Success": False}, 401)
        files = self.repos[repo]
        if m[2]:
            assert q.get("Revision") == ["master"] and q.get("Recursive") == ["True"]
            return h.send_json({"Code": 200, "Success": True, "Data": {"Files": [
                {"Name": p.rsplit("/", 1)[-1], "Path": p, "Size": f.stat().st_size, "Type": "blob"}
                for p, f in sorted(files.items())]}})
        fp = q.get("FilePath", [""])[0]
        if fp not in files:
            return h.send_json({"Code": 10010205001, "Message": "file not found", "Success": False}, 404)
        f = files[fp]
        if f.stat().st_size > MIB:
            h.send_response(302)
            h.send_header("Location", f"{self.oss.base}/oss/{_etag(f)}")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        h.send_file(f)


def plain_site(files: dict[str, Path]) -> Site:
    def route(h: _Handler, path: str, q) -> None:
        f = files.get(path.lstrip("/"))
        if f is None:
            return h.send_status(404, "no such file")
        h.send_file(f)
    return Site(route).start()


# ---------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------

def write_sparse_split(path: Path, model, types, n_shards: int) -> list[Path]:
    """write_sparse_gguf's sparse files as a split set (llama-gguf-split's names and split.* keys):
    each shard's real header, extended with os.truncate to the length its tensor data would take."""
    path, specs, tys, ftype, cfg, tmp_dir = _prepare(path, model, types, None, None)
    per = math.ceil(len(specs) / n_shards)
    w = _Writer(tmp_dir / path.name, model.hparams.arch, split_max_tensors=per)
    write_metadata(w, model, ftype, cfg)
    for spec, t in zip(specs, tys):
        _check_rows(spec, t)
        w.add_tensor_info(spec.name, tuple(reversed(spec.shape)), np.dtype(np.float32), tensor_bytes(spec.shape, t),
                          raw_dtype=t)
    names = w.format_shard_names(tmp_dir / path.name)
    assert len(names) == n_shards
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    ends = [f.tell() for f in w.fout]
    datas = [sum(GGUFWriter.ggml_pad(ti.nbytes, w.data_alignment) for ti in shard.values()) for shard in w.tensors]
    w.close()
    out = []
    for name, end, data in zip(names, ends, datas):
        os.truncate(name, GGUFWriter.ggml_pad(end, w.data_alignment) + data)
        dst = path.with_name(name.name)
        os.replace(name, dst)
        out.append(dst)
    tmp_dir.rmdir()
    return out


@pytest.fixture(scope="module")
def r1_set(tmp_path_factory) -> list[Path]:
    model = resolve_catalog_model(catalog()["deepseek-r1"], "mla")
    plan = size_scheme(model, resolve_scheme("Q4_K_M"))
    folder = tmp_path_factory.mktemp("r1-set")
    return write_sparse_split(folder / "DeepSeek-R1-Q4_K_M.gguf", model, plan, 9)


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> Path:
    from planner.gguf.writer import write_gguf
    from tiny_models import tiny_model

    folder = tmp_path_factory.mktemp("tiny-remote")
    return write_gguf(folder / "tiny-Q8_0.gguf", tiny_model("deepseek2-mla"))[0]


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A fresh header cache and fast network settings; no real endpoint or token leaks in."""
    from planner.remote import models

    clear_memo()
    models.clear_memo()
    for k in ("HF_ENDPOINT", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MODELSCOPE_ENDPOINT", "MODELSCOPE_API_TOKEN",
              "MODELSCOPE_DOMAIN"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("DQ_PLANNER_HTTP_TIMEOUT", "5")
    monkeypatch.setenv("DQ_PLANNER_HTTP_RETRIES", "1")
    monkeypatch.setenv("DQ_PLANNER_DETECT", "0")
    return monkeypatch


@pytest.fixture
def hub(env):
    h = Hub()
    env.setenv("HF_ENDPOINT", h.hub.base)
    yield h
    h.stop()


@pytest.fixture
def ms(env):
    m = ModelScope()
    env.setenv("MODELSCOPE_ENDPOINT", m.api.base)
    yield m
    m.stop()


@contextmanager
def site(files: dict[str, Path]):
    s = plain_site(files)
    try:
        yield s
    finally:
        s.stop()


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------------------------------
# The full-size set
# ---------------------------------------------------------------------------------------------------

def test_r1_nine_shards_planned_remotely_as_locally_with_header_bytes_only(hub, r1_set, capsys, tmp_path):
    apparent = sum(p.stat().st_size for p in r1_set)
    on_disk = sum(p.stat().st_blocks * 512 for p in r1_set)
    assert len(r1_set) == 9 and apparent > 380e9 and on_disk < 64 * MIB
    hub.add("unsloth/DeepSeek-R1-GGUF", {f"Q4_K_M/{p.name}": p for p in r1_set})
    args = ["--headless", "--json", "--device", "h100", "--scheme", "Q4_K_M", "--scheme", "DQ3_K_M"]

    code, local_out, err = run(capsys, *args, "--model-file", str(r1_set[0]))
    assert code == 0, err
    code, remote_out, err = run(capsys, *args, "--model-file", "hf://unsloth/DeepSeek-R1-GGUF", "--quant", "Q4_K_M")
    assert code == 0, err
    first = hub.sent()
    hub.reset()
    clear_memo()                      # a second process: only the disk cache remains
    code, again, err = run(capsys, *args, "--model-file", "hf://unsloth/DeepSeek-R1-GGUF", "--quant", "Q4_K_M")
    assert code == 0, err
    second = hub.sent()
    with capsys.disabled():
        print(f"\nR1 Q4_K_M, 9 shards, {apparent:,} bytes apparent: first run {first:,} bytes sent "
              f"({first / MIB:.2f} MiB), second run {second:,} bytes ({second / 1024:.1f} KiB)")
    assert first < 64 * MIB
    assert second < MIB
    shard1 = f"hf://unsloth/DeepSeek-R1-GGUF/Q4_K_M/{r1_set[0].name}"
    local = json.loads(local_out.replace(str(r1_set[0]), shard1))
    assert json.loads(remote_out) == local
    assert json.loads(again) == local
    q4 = local["schemes"][0]
    assert q4["id"] == "file" or q4["size_bytes"] > 370 * (1 << 30)
    # the CDN was asked only for ranges, never for a whole file
    assert all(e["range"] for e in hub.cdn.log if e["method"] == "GET")


def test_inspect_url_json_equals_local_json(r1_set, env, capsys):
    files = {p.name: p for p in r1_set}
    with site(files) as s:
        url = f"{s.base}/{r1_set[0].name}"
        code, remote, err = run(capsys, "inspect", url, "--json")
        assert code == 0, err
        sent = s.sent
    code, local, err = run(capsys, "inspect", str(r1_set[0]), "--json")
    assert code == 0, err
    r, l_ = json.loads(remote), json.loads(local)
    assert r["path"] == url and l_["path"] == str(r1_set[0])
    assert [s["path"] for s in r["shards"]] == [f"{s.base}/{p.name}" for p in r1_set]
    for d in (r, l_):
        d.pop("path")
        for sh in d["shards"]:
            sh.pop("path")
        d["model"].pop("source")
    assert r == l_
    assert r["split_count"] == 9 and r["tensor_count"] == 1086 and r["missing_shards"] == []
    assert sent < 64 * MIB


# ---------------------------------------------------------------------------------------------------
# Hugging Face: tree, --quant, tokens, errors
# ---------------------------------------------------------------------------------------------------

def test_token_goes_to_the_hub_only_never_to_the_cdn(hub, r1_set, env, capsys):
    hub.add("org/private-GGUF", {f"Q4_K_M/{p.name}": p for p in r1_set[:1]} | {"README.md": r1_set[0]},
            private=True)
    spec = f"hf://org/private-GGUF/Q4_K_M/{r1_set[0].name}"
    code, out, err = run(capsys, "inspect", spec, "--json")
    assert code == 2
    assert err.count("\n") == 1 and "401" in err and "HF_TOKEN" in err

    env.setenv("HF_TOKEN", TOKEN)
    hub.reset()
    code, out, err = run(capsys, "inspect", spec, "--json")
    # the set has 9 shards and the repository holds only the first: a clear error on shard 2
    assert code == 2 and "404" in err and "00002-of-00009" in err
    hub_auth = [e["authorization"] for e in hub.hub.log]
    assert hub_auth and all(a == f"Bearer {TOKEN}" for a in hub_auth)
    assert hub.cdn.log and all(e["authorization"] is None for e in hub.cdn.log)


def test_quant_chooses_a_set_from_the_paged_tree(hub, r1_set, tiny_file, capsys):
    hub.add("unsloth/DeepSeek-R1-GGUF", {f"Q4_K_M/{p.name}": p for p in r1_set})
    hub.add("unsloth/DeepSeek-R1-GGUF", {"tiny/tiny-Q8_0.gguf": tiny_file, "tiny/mmproj-F16.gguf": tiny_file})
    code, out, err = run(capsys, "inspect", "hf://unsloth/DeepSeek-R1-GGUF", "--quant", "q8_0", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["path"] == "hf://unsloth/DeepSeek-R1-GGUF/tiny/tiny-Q8_0.gguf"
    tree_pages = [e for e in hub.hub.log if "/tree/" in e["path"]]
    assert len(tree_pages) == math.ceil((9 + 2 + 2) / Hub.PAGE)      # files and 2 folders, 4 a page
    code, out, err = run(capsys, "inspect", "hf://unsloth/DeepSeek-R1-GGUF", "--json")
    assert code == 2 and "--quant" in err and "Q4_K_M" in err
    code, out, err = run(capsys, "inspect", "hf://unsloth/DeepSeek-R1-GGUF", "--quant", "IQ1_S")
    assert code == 2 and "no GGUF set matches" in err


def test_an_error_of_the_cdn_names_the_host_redirected_to(hub, r1_set, capsys):
    hub.add("unsloth/DeepSeek-R1-GGUF", {f"Q4_K_M/{p.name}": p for p in r1_set})
    hub.expired = True
    code, out, err = run(capsys, "inspect", f"hf://unsloth/DeepSeek-R1-GGUF/Q4_K_M/{r1_set[0].name}")
    assert code == 2 and err.count("\n") == 1
    assert "403" in err and urlsplit(hub.cdn.base).netloc in err and "redirect" in err


def test_404_and_unknown_repository(hub, capsys):
    code, out, err = run(capsys, "inspect", "hf://nobody/nothing/x.gguf")
    assert code == 2 and "404" in err and err.count("\n") == 1
    code, out, err = run(capsys, "--headless", "--model-file", "hf://nobody/nothing", "--quant", "Q4_K_M")
    assert code == 2 and "404" in err


# ---------------------------------------------------------------------------------------------------
# ModelScope
# ---------------------------------------------------------------------------------------------------

def test_modelscope_file_and_quant_with_its_token_on_its_host_only(ms, env, r1_set, tiny_file, capsys):
    ms.add("okada/DQ3", {"tiny/tiny-Q8_0.gguf": tiny_file} | {f"R1/{p.name}": p for p in r1_set}, private=True)
    code, out, err = run(capsys, "inspect", "ms://okada/DQ3/tiny/tiny-Q8_0.gguf", "--json")
    assert code == 2 and "401" in err
    env.setenv("MODELSCOPE_API_TOKEN", MS_TOKEN)
    code, out, err = run(capsys, "inspect", "ms://okada/DQ3/tiny/tiny-Q8_0.gguf", "--json")
    assert code == 0, err
    code2, local, _ = run(capsys, "inspect", str(tiny_file), "--json")
    r, l_ = json.loads(out), json.loads(local)
    assert r["tensors"] == l_["tensors"] and r["metadata"] == l_["metadata"] and r["plan"] == l_["plan"]
    code, out, err = run(capsys, "inspect", "ms://okada/DQ3", "--quant", "Q4_K_M", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["split_count"] == 9 and len(d["shards"]) == 9 and d["tensor_count"] == 1086
    assert ms.oss.log and all(e["authorization"] is None and e["cookie"] is None for e in ms.oss.log)
    assert all(e["cookie"] == f"m_session_id={MS_TOKEN}" for e in ms.api.log[2:])


# ---------------------------------------------------------------------------------------------------
# Servers that misbehave
# ---------------------------------------------------------------------------------------------------

def test_server_without_range_is_never_downloaded(r1_set, tiny_file, env, capsys):
    with site({p.name: p for p in r1_set} | {"tiny.gguf": tiny_file}) as s:
        s.no_range = True
        code, out, err = run(capsys, "inspect", f"{s.base}/{r1_set[0].name}")
        assert code == 2 and "ignores Range" in err and err.count("\n") == 1
        assert s.sent < 32 * MIB, s.sent            # of a 45 GB shard
        s.reset()
        # a header inside the first chunk is read from it, and nothing more
        code, out, err = run(capsys, "inspect", f"{s.base}/tiny.gguf", "--json")
        assert code == 0, err
        assert json.loads(out)["tensor_count"] == len(json.loads(out)["tensors"]) > 0


def test_truncated_body_is_one_line_exit_2(r1_set, env, capsys):
    with site({p.name: p for p in r1_set}) as s:
        s.truncate = 100_000
        code, out, err = run(capsys, "inspect", f"{s.base}/{r1_set[0].name}")
        assert code == 2 and "truncated response" in err and err.count("\n") == 1


def test_416_is_one_line_exit_2(tmp_path, env, capsys):
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with site({"empty.gguf": empty}) as s:
        code, out, err = run(capsys, "inspect", f"{s.base}/empty.gguf")
        assert code == 2 and "416" in err and err.count("\n") == 1


def test_slow_server_shows_progress_and_stall_is_a_network_failure(r1_set, env, capsys):
    env.setenv("DQ_PLANNER_PROGRESS_AFTER", "0.2")
    with site({p.name: p for p in r1_set}) as s:
        s.delay = 0.01
        code, out, err = run(capsys, "inspect", f"{s.base}/{r1_set[0].name}", "--json")
        assert code == 0, err
        assert "reading GGUF headers of" in err and json.loads(out)["tensor_count"] == 1086
        s.delay = 0
        s.stall_after = 200_000
        env.setenv("DQ_PLANNER_HTTP_TIMEOUT", "0.5")
        env.setenv("XDG_CACHE_HOME", str(Path(os.environ["XDG_CACHE_HOME"]) / "other"))
        clear_memo()
        t = time.monotonic()
        code, out, err = run(capsys, "inspect", f"{s.base}/{r1_set[0].name}")
        lines = err.strip().splitlines()      # progress lines, then the one error line
        assert code == 1 and "network failure" in lines[-1] and "Traceback" not in err
        assert all(ln.startswith("dq-planner: reading GGUF headers") for ln in lines[:-1])
        assert time.monotonic() - t < 10


def test_refused_connection_is_exit_1(env, capsys):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, out, err = run(capsys, "inspect", f"http://127.0.0.1:{port}/x.gguf")
    assert code == 1 and "network failure" in err


def test_serve_and_quantize_refuse_urls(capsys, env):
    code, out, err = run(capsys, "serve", "--model-file", "hf://a/b/c.gguf", "--print-command")
    assert code == 2 and "local" in err
    code, out, err = run(capsys, "quantize", "--input", "https://x/y.gguf", "--scheme", "Q4_K_M", "--dry-run")
    assert code == 2 and "local" in err


# ---------------------------------------------------------------------------------------------------
# --model hf://OWNER/REPO: config.json, and the safetensors headers for vLLM / SGLang
# ---------------------------------------------------------------------------------------------------

def write_safetensors_set(folder: Path, tensors, n_files: int) -> tuple[list[Path], dict]:
    """Sparse safetensors shards (header JSON, then the data's length of zeros) and their index."""
    from planner.core.serving.hf_checkpoint import DTYPE_BYTES

    dt = {"bf16": "BF16", "f16": "F16", "f32": "F32", "f8_e4m3": "F8_E4M3", "i8": "I8", "i32": "I32", "i64": "I64"}
    per = math.ceil(len(tensors) / n_files)
    paths, wm, total = [], {}, 0
    for i in range(n_files):
        part = tensors[i * per:(i + 1) * per]
        name = f"model-{i + 1:05d}-of-{n_files:05d}.safetensors"
        header, off = {"__metadata__": {"format": "pt"}}, 0
        for t in part:
            n = math.prod(t.shape) * DTYPE_BYTES[t.dtype]
            header[t.name] = {"dtype": dt[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + n]}
            off += n
            wm[t.name] = name
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        p = folder / name
        with open(p, "wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw)
        os.truncate(p, 8 + len(raw) + off)
        total += off
        paths.append(p)
    return paths, {"metadata": {"total_size": total}, "weight_map": wm}


def test_model_hf_repo_reads_config_and_safetensors_headers(hub, tmp_path, capsys):
    from planner.core.serving.hf_checkpoint import checkpoint, resolve_format

    entry = catalog()["deepseek-v3"]
    ck = checkpoint(entry, resolve_format("FP8"))
    tensors = ck.tensors()
    shards, index = write_safetensors_set(tmp_path, tensors, 16)
    (tmp_path / "config.json").write_text(json.dumps(entry.config))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    hub.add("deepseek-ai/DeepSeek-V3", {"config.json": tmp_path / "config.json",
                                        "model.safetensors.index.json": tmp_path / "model.safetensors.index.json"}
            | {p.name: p for p in shards})
    args = ["--headless", "--json", "--engine", "vllm", "--device", "h200", "--nodes", "2"]
    code, local, err = run(capsys, *args, "--model", "deepseek-v3")
    assert code == 0, err
    hub.reset()
    code, remote, err = run(capsys, *args, "--model", "hf://deepseek-ai/DeepSeek-V3")
    assert code == 0, err
    r, l_ = json.loads(remote), json.loads(local)
    assert [s["id"] for s in r["schemes"]] == [s["id"] for s in l_["schemes"]]
    assert [s["size_bytes"] for s in r["schemes"]] == [s["size_bytes"] for s in l_["schemes"]]
    published = sum(math.prod(t.shape) * {"f8_e4m3": 1, "bf16": 2, "f32": 4}[t.dtype] for t in tensors)
    note = next(n for n in r["notes"] if n.startswith("published checkpoint"))
    assert f"{published:,} bytes in 16 safetensors files" in note and f"{len(tensors):,} tensors" in note
    assert "the FP8 plan" in note and "(the same)" in note
    fp8 = next(s for s in r["schemes"] if s["id"] == "FP8")
    assert note in fp8["notes"]
    with capsys.disabled():
        print(f"\nDeepSeek-V3 FP8, 16 safetensors shards ({published:,} bytes): {hub.sent():,} bytes sent "
              f"(index {os.path.getsize(tmp_path / 'model.safetensors.index.json'):,})")
    # header bytes only: the index, config.json and each shard's header (a few hundred KB)
    assert hub.sent() < os.path.getsize(tmp_path / "model.safetensors.index.json") + 16 * 2 * MIB
    # the node commands of the remote model are the catalog model's (no new requests: read once)
    hub.reset()
    cmd = ["--headless", "--engine", "vllm", "--device", "h200", "--nodes", "2", "--scheme", "FP8", "--print-commands"]
    code, out, err = run(capsys, *cmd, "--model", "hf://deepseek-ai/DeepSeek-V3")
    assert code == 0, err
    code, cat_cmds, err = run(capsys, *cmd, "--model", "deepseek-v3")
    assert out.split("\n\n")[-1] == cat_cmds.split("\n\n")[-1] and "vllm serve" in out
    assert hub.sent() == 0
    # llama.cpp plans the GGUF schemes of the remote config as of the catalog's
    code, out, err = run(capsys, "--headless", "--json", "--device", "h100", "--scheme", "Q4_K_M",
                         "--model", "hf://deepseek-ai/DeepSeek-V3")
    assert code == 0, err
    code, cat_out, err = run(capsys, "--headless", "--json", "--device", "h100", "--scheme", "Q4_K_M",
                             "--model", "deepseek-v3")
    assert json.loads(out)["schemes"] == json.loads(cat_out)["schemes"]


def test_headless_without_a_url_imports_nothing_network_related():
    code = ("import sys; from planner.cli import main; main(['--headless', '--device', 'h100', '--scheme', 'Q4_K_M']);"
            "bad = [m for m in ('planner.remote.client', 'planner.remote.hubs', 'planner.gguf.remote', 'http.client', 'requests', 'urllib3',"
            " 'urllib.request') if m in sys.modules]; print('BAD', bad) if bad else None; sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "DQ_PLANNER_DETECT": "0"})
    assert r.returncode == 0, r.stdout + r.stderr


def test_model_ms_repo_reads_config_json(ms, tmp_path, capsys):
    entry = catalog()["deepseek-v3"]
    (tmp_path / "config.json").write_text(json.dumps(entry.config))
    ms.add("deepseek-ai/DeepSeek-V3", {"config.json": tmp_path / "config.json"})
    args = ["--headless", "--json", "--device", "h100", "--scheme", "Q4_K_M"]
    code, out, err = run(capsys, *args, "--model", "ms://deepseek-ai/DeepSeek-V3")
    assert code == 0, err
    code, cat_out, err = run(capsys, *args, "--model", "deepseek-v3")
    assert json.loads(out)["schemes"] == json.loads(cat_out)["schemes"]
    assert json.loads(out)["model"]["id"] == "deepseek-v3"


def test_cache_is_keyed_by_etag_and_size(r1_set, env, capsys):
    with site({p.name: p for p in r1_set}) as s:
        url = f"{s.base}/{r1_set[0].name}"
        assert run(capsys, "inspect", url, "--json")[0] == 0
        cold = s.sent
        clear_memo()
        s.reset()
        assert run(capsys, "inspect", url, "--json")[0] == 0
        warm = s.sent
        os.utime(r1_set[0], ns=(time.time_ns(), time.time_ns()))     # a new ETag: the entry no longer applies
        clear_memo()
        s.reset()
        assert run(capsys, "inspect", url, "--json")[0] == 0
        changed = s.sent
    assert warm <= 9 and cold > MIB and changed > MIB
