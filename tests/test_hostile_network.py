"""Hostile servers, tokens and cache entries (docs/reliability.md items 18 onwards): each server mode of
tests/hostile_http.py on 127.0.0.1 against `dq-planner inspect URL`, with what it costs the client.

The file served: a GGUF whose header is about 2.6 MB (a 150,000-token vocabulary), so that the parser
needs ranged reads after the first MiB. Every mode ends in one line on stderr and an exit code (2 for
the server's bad answers, 1 for the network), within seconds, after a bounded number of requests and
bytes; COSTS collects them and the last test prints the table (bytes and requests per mode).
"""

from __future__ import annotations

import gzip
import json
import os
import stat
import time
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFWriter

from hostile_http import Hostile, Request, asked_range, head, ranged
from planner.cli import main as cli_main

MIB = 1 << 20
COSTS: dict[str, tuple[int, int, int, int]] = {}   # mode -> (requests, body bytes received, bytes sent, connections)
SECRET = "hf_secret_0123456789"


def gguf_bytes(tmp: Path, name: str = "hostile", n_tokens: int = 150_000) -> bytes:
    path = tmp / f"{name}.gguf"
    w = GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_token_list([f"tok{i:07d}" for i in range(n_tokens)])
    w.add_tensor("t", np.zeros(4, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> bytes:
    data = gguf_bytes(tmp_path_factory.mktemp("hostile"))
    assert len(data) > 2 * MIB
    return data


@pytest.fixture(scope="module")
def other(tmp_path_factory) -> bytes:
    """Another file of the same size and layout, other names: what a replaced file reads as."""
    data = gguf_bytes(tmp_path_factory.mktemp("hostile-b"), name="HOSTILE")
    return data


@pytest.fixture
def env(tmp_path, monkeypatch):
    from planner.gguf.remote import clear_memo
    from planner.remote import models

    clear_memo()
    models.clear_memo()
    for k in ("HF_ENDPOINT", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "MODELSCOPE_ENDPOINT",
              "MODELSCOPE_API_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_DISABLE_IMPLICIT_TOKEN", "HTTP_PROXY",
              "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("DQ_PLANNER_HTTP_TIMEOUT", "3")
    monkeypatch.setenv("DQ_PLANNER_HTTP_RETRIES", "1")
    monkeypatch.setenv("DQ_PLANNER_DETECT", "0")
    return monkeypatch


def run(capsys, *argv: str) -> tuple[int, str, str]:
    from planner.gguf.remote import clear_memo
    from planner.remote.client import STATS

    clear_memo()
    STATS.update(requests=0, bytes=0)
    code = cli_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def cost(mode: str, s: Hostile) -> None:
    from planner.remote.client import STATS

    assert STATS["requests"] == s.requests
    COSTS[mode] = (s.requests, STATS["bytes"], s.sent, s.connections)


# ---------------------------------------------------------------------------------------------------
# Modes
# ---------------------------------------------------------------------------------------------------

def after_first_mib(bad):
    """A correct server for the probe and the first MiB; `bad(server, req, a, b)` for later ranges."""
    def answer(server: Hostile, req: Request):
        r = asked_range(req, len(server.data))
        if r is None or r[0] < MIB:
            return ranged(server, req)
        return bad(server, req, *r)
    return answer


def empty_range(server, req, a, b):           # 206 bytes A-(A-1)/size: nothing, forever
    return [head("206 Partial Content", {"Content-Range": f"bytes {a}-{a - 1}/{len(server.data)}",
                                         "Content-Length": 0, "ETag": server.etag})]


def ten_bytes(server, req, a, b):             # 10 bytes per range: 330,000 requests for a 3.3 MB header
    body = server.data[a:a + 10]
    return [head("206 Partial Content", {"Content-Range": f"bytes {a}-{a + 9}/{len(server.data)}",
                                         "Content-Length": 10, "ETag": server.etag}), body]


def overlong(server, req, a, b):              # a range ending at 1 TiB, no Content-Length: streams on
    def gen():
        yield head("206 Partial Content", {"Content-Range": f"bytes {a}-1099511627776/{len(server.data)}",
                                           "ETag": server.etag, "Connection": "close"})
        for _ in range(4096):                  # 256 MiB at most, then the server gives up
            yield b"\0" * 65536
    return gen()


def test_empty_range_stops_in_one_line(big, env, capsys):
    with Hostile(after_first_mib(empty_range), big) as s:
        t = time.monotonic()
        code, out, err = run(capsys, "inspect", s.url())
        cost("206 with an empty range after the first MiB", s)
    assert code == 2 and "Content-Range" in one_line(err)
    assert s.requests <= 4 and time.monotonic() - t < 10


def test_ten_bytes_per_range_stops_in_one_line(big, env, capsys):
    with Hostile(after_first_mib(ten_bytes), big) as s:
        code, out, err = run(capsys, "inspect", s.url())
        cost("10 bytes per range after the first MiB", s)
    assert code == 2 and "progress" in one_line(err)
    assert s.requests <= 4


def test_overlong_range_is_not_read(big, env, capsys):
    with Hostile(after_first_mib(overlong), big) as s:
        code, out, err = run(capsys, "inspect", s.url())
        cost("range answered up to 1 TiB, no Content-Length", s)
    assert code == 2 and "not reading past the range asked" in one_line(err)
    assert s.sent < 2 * MIB + 65536 * 64, s.sent        # the first MiB and what the socket buffered


def test_trickle_meets_the_deadline_with_progress(big, env, capsys):
    env.setenv("DQ_PLANNER_HTTP_DEADLINE", "2")
    env.setenv("DQ_PLANNER_PROGRESS_AFTER", "0.3")

    def trickle(server, req):
        r = asked_range(req, len(server.data))
        if r is None or r == (0, 0):
            return ranged(server, req)
        a, b = r

        def gen():
            yield head("206 Partial Content", {"Content-Range": f"bytes {a}-{b}/{len(server.data)}",
                                               "Content-Length": b - a + 1, "ETag": server.etag})
            for i in range(a, b + 1):
                time.sleep(0.02)
                yield server.data[i:i + 1]
        return gen()
    with Hostile(trickle, big) as s:
        t = time.monotonic()
        code, out, err = run(capsys, "inspect", s.url())
        took = time.monotonic() - t
        cost("trickle (one byte per 20 ms), deadline 2 s", s)
    lines = err.strip().splitlines()
    assert code == 1 and "DQ_PLANNER_HTTP_DEADLINE" in lines[-1] and "Traceback" not in err
    assert any(ln.startswith("dq-planner: reading GGUF headers") for ln in lines[:-1])
    assert took < 6


@pytest.mark.parametrize("how", ["etag", "if-range"])
def test_file_replaced_mid_read_is_refused_and_not_cached(big, other, env, capsys, how):
    assert len(other) == len(big)

    def replaced(server, req):
        r = asked_range(req, len(server.data))
        if r is None or r[0] < MIB:
            return ranged(server, req)
        etag = '"other"'
        if how == "if-range":           # honours If-Range: the whole new file (the client reads none of it)
            return ranged(server, req, data=other, etag=etag)
        # ignores If-Range: the new file's range under its new ETag
        plain = Request(req.method, req.path, {k: v for k, v in req.headers.items() if k != "if-range"}, req.n)
        return ranged(server, plain, data=other, etag=etag)
    with Hostile(replaced, big) as s:
        code, out, err = run(capsys, "inspect", s.url())
        cost(f"file replaced mid-read ({how})", s)
        assert any("if-range" in r.headers for r in s.log if (asked_range(r, len(big)) or (0, 0))[0] >= MIB)
    assert code == 2 and "changed while it was read" in one_line(err)
    cache = Path(os.environ["XDG_CACHE_HOME"]) / "dq-planner" / "headers"
    assert not cache.exists() or not any(cache.iterdir())


def test_gzip_answer_is_refused_at_once(big, env, capsys):
    packed = gzip.compress(big)

    def gz(server, req):
        return [head("200 OK", {"Content-Length": len(packed), "Content-Encoding": "gzip"}), packed]
    with Hostile(gz, big) as s:
        code, out, err = run(capsys, "inspect", s.url())
        cost("gzip answer", s)
    assert code == 2 and "Content-Encoding: gzip" in one_line(err) and s.requests == 1


@pytest.mark.parametrize("header,value", [("X-Linked-Size", "\u00b2"), ("Content-Length", "\u00b2"),
                                          ("X-Linked-Size", "-1"), ("Content-Length", "1e3")])
def test_bad_size_headers_are_one_line(big, env, capsys, header, value):
    def bad(server, req):
        if header == "X-Linked-Size":
            if req.path.startswith("/cdn"):
                return ranged(server, req)
            return [head("302 Found", {"Location": "/cdn/x.gguf", "X-Linked-Size": value,
                                       "X-Linked-Etag": '"abc"', "Content-Length": 0})]
        return [head("200 OK", {header: value, "Connection": "close"}), server.data[:100]]
    with Hostile(bad, big) as s:
        code, out, err = run(capsys, "inspect", s.url())
    assert code == 2 and header in one_line(err)


def test_redirect_bodies_are_not_read_and_loops_end(big, env, capsys):
    def endless_redirect(server, req):
        def gen():
            yield head("302 Found", {"Location": f"/r{req.n}.gguf"})     # no length: a body until closed
            for _ in range(1024):
                yield b"x" * 65536
        return gen()
    with Hostile(endless_redirect, big) as s:
        code, out, err = run(capsys, "inspect", s.url())
        cost("redirect loop, each with an endless body", s)
    assert code == 2 and "redirects" in one_line(err)
    assert s.requests == 6 and s.sent < 6 * 8 * MIB


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999/x.gguf", "http://[::1/x.gguf", "http://127.0.0.1:1/a b.gguf",
                                 "http://127.0.0.1:0/x.gguf", "https://host\x1b[2J/x.gguf"])
def test_bad_urls_are_bad_input(env, capsys, url):
    code, out, err = run(capsys, "inspect", url)
    assert code == 2 and "\x1b" not in one_line(err)


@pytest.mark.parametrize("name,value", [("DQ_PLANNER_HTTP_TIMEOUT", "nan"), ("DQ_PLANNER_HTTP_TIMEOUT", "inf"),
                                        ("DQ_PLANNER_HTTP_TIMEOUT", "1e300"), ("DQ_PLANNER_HTTP_RETRIES", "nan"),
                                        ("DQ_PLANNER_HTTP_RETRIES", "inf"), ("DQ_PLANNER_HTTP_RETRIES", "2.5"),
                                        ("DQ_PLANNER_HTTP_DEADLINE", "-1")])
def test_bad_network_settings_are_bad_input(big, env, capsys, name, value):
    env.setenv(name, value)
    with Hostile(ranged, big) as s:
        code, out, err = run(capsys, "inspect", s.url())
    assert code == 2 and name in one_line(err)


def test_good_server_reuses_one_connection_and_grows_its_reads(big, env, capsys):
    with Hostile(ranged, big) as s:
        code, out, err = run(capsys, "inspect", s.url(), "--json")
        cost("a correct server (reference)", s)
    assert code == 0, err
    assert json.loads(out)["metadata"]["general.name"] == "hostile"
    sizes = [b - a + 1 for a, b in (asked_range(r, len(big)) for r in s.log)]
    assert sizes == [1, MIB, min(2 * MIB, len(big) - MIB)]        # 1 byte, 1 MiB, then up to 2 MiB
    assert s.connections == 1 and s.requests == len(sizes)


def test_hub_redirects_keep_one_connection(big, env, capsys):
    """A hub answering every read with an empty 302 to its CDN (here the same server): the redirects'
    connections are reused as well."""
    def hub(server, req):
        if req.path.startswith("/cdn/"):
            return ranged(server, req)
        return [head("302 Found", {"Location": "/cdn/x.gguf", "X-Linked-Size": len(server.data),
                                   "X-Linked-Etag": '"e"', "Content-Length": 0})]
    with Hostile(hub, big) as s:
        code, out, err = run(capsys, "inspect", s.url(), "--json")
        cost("a hub redirecting every read to its CDN (reference)", s)
    assert code == 0, err
    assert s.requests == 6 and s.connections == 1


# ---------------------------------------------------------------------------------------------------
# Proxies
# ---------------------------------------------------------------------------------------------------

def test_proxy_is_used_and_no_proxy_honoured(big, env, capsys):
    """HTTP_PROXY: the request goes to the proxy (absolute URI; the target host .invalid never resolves);
    NO_PROXY naming the target: straight to it."""
    def proxy(server, req):
        assert req.path.startswith("http://files.invalid/")
        return ranged(server, req)
    with Hostile(proxy, big) as p:
        env.setenv("HTTP_PROXY", f"http://127.0.0.1:{p.port}")
        code, out, err = run(capsys, "inspect", "http://files.invalid/x.gguf", "--json")
        assert code == 0, err
        assert p.requests >= 2 and all(r.path.startswith("http://files.invalid/") for r in p.log)
        with Hostile(ranged, big) as direct:
            env.setenv("NO_PROXY", "127.0.0.1")
            code, out, err = run(capsys, "inspect", direct.url("y.gguf"), "--json")
            assert code == 0, err
            assert direct.requests >= 2 and not any("y.gguf" in r.path for r in p.log)


# ---------------------------------------------------------------------------------------------------
# Tokens: never printed
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("where,value,problem", [
    ("HF_TOKEN", SECRET + "\nX-Evil: 1", "line"),
    ("HF_TOKEN", SECRET + "\u00e9", "non-ASCII"),
    ("file", SECRET + "\n" + SECRET + "2\n", "line"),
    ("MODELSCOPE_API_TOKEN", SECRET + "\r\nX-Evil: 1", "line"),
])
def test_bad_tokens_are_named_never_shown(big, env, capsys, tmp_path, where, value, problem):
    def hubish(server, req):
        return ranged(server, req)
    with Hostile(hubish, big) as s:
        if where == "file":
            (tmp_path / "hf-home").mkdir(exist_ok=True)
            (tmp_path / "hf-home" / "token").write_text(value)
            env.setenv("HF_ENDPOINT", f"http://127.0.0.1:{s.port}")
            target = "hf://o/r/x.gguf"
        elif where == "HF_TOKEN":
            env.setenv(where, value)
            env.setenv("HF_ENDPOINT", f"http://127.0.0.1:{s.port}")
            target = "hf://o/r/x.gguf"
        else:
            env.setenv(where, value)
            env.setenv("MODELSCOPE_ENDPOINT", f"http://127.0.0.1:{s.port}")
            target = "ms://o/r/x.gguf"
        code, out, err = run(capsys, "inspect", target)
    assert code == 2 and problem in one_line(err)
    assert (where if where != "file" else "token") in err
    assert SECRET not in err and SECRET not in out and s.requests == 0


def test_token_file_that_is_a_fifo_does_not_hang(env, capsys, tmp_path):
    (tmp_path / "hf-home").mkdir()
    os.mkfifo(tmp_path / "hf-home" / "token")
    env.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    t = time.monotonic()
    code, out, err = run(capsys, "inspect", "hf://o/r/x.gguf")
    assert code == 2 and "FIFO" in one_line(err) and time.monotonic() - t < 5


def test_hf_conventions(big, env, capsys, tmp_path):
    """The token file under $XDG_CACHE_HOME/huggingface when HF_HOME is unset; HF_HUB_DISABLE_IMPLICIT_TOKEN;
    HF_HUB_OFFLINE; revisions refs/pr/N (plain or percent-encoded, encoded once); hf://datasets/."""
    seen: list[Request] = []

    def hub(server, req):
        seen.append(req)
        return ranged(server, req)
    with Hostile(hub, big) as s:
        env.setenv("HF_ENDPOINT", f"http://127.0.0.1:{s.port}")
        env.delenv("HF_HOME")
        (tmp_path / "cache" / "huggingface").mkdir(parents=True)
        (tmp_path / "cache" / "huggingface" / "token").write_text(SECRET + "\n")
        assert run(capsys, "inspect", "hf://o/r@refs/pr/1/sub/x.gguf")[0] == 0
        assert seen[0].path == "/o/r/resolve/refs%2Fpr%2F1/sub/x.gguf"
        assert seen[0].headers.get("authorization") == f"Bearer {SECRET}"
        seen.clear()
        assert run(capsys, "inspect", "hf://datasets/o/r@refs%2Fpr%2F2/x.gguf")[0] == 0
        assert seen[0].path == "/datasets/o/r/resolve/refs%2Fpr%2F2/x.gguf"
        seen.clear()
        env.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
        assert run(capsys, "inspect", "hf://o/r/x.gguf")[0] == 0
        assert "authorization" not in seen[0].headers
        seen.clear()
        env.setenv("HF_HUB_OFFLINE", "1")
        code, out, err = run(capsys, "inspect", "hf://o/r/y.gguf")
        assert code == 2 and "HF_HUB_OFFLINE" in one_line(err) and not seen


# ---------------------------------------------------------------------------------------------------
# The header cache
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["corrupt", "fifo", "dev-zero", "passwd", "old-format"])
def test_bad_cache_entries_are_replaced(big, env, capsys, bad):
    with Hostile(ranged, big) as s:
        code, out, err = run(capsys, "inspect", s.url(), "--json")
        assert code == 0, err
        folder = Path(os.environ["XDG_CACHE_HOME"]) / "dq-planner" / "headers"
        (entry,) = folder.iterdir()
        good = entry.read_bytes()
        entry.unlink()
        if bad == "corrupt":
            entry.write_bytes(good[:200] + b"\xff" * 64 + good[264:])
        elif bad == "fifo":
            os.mkfifo(entry)
        elif bad == "dev-zero":
            entry.symlink_to("/dev/zero")
        elif bad == "passwd":
            entry.symlink_to("/etc/passwd")
        else:                              # the bytes alone, as the previous version wrote them, damaged
            entry.write_bytes(b"XXXX" + good[74 + 4:])
        before = s.sent
        t = time.monotonic()
        code, out2, err = run(capsys, "inspect", s.url(), "--json")
        assert code == 0, err
        assert time.monotonic() - t < 10
        assert json.loads(out2) == json.loads(out)
        assert s.sent - before > MIB                          # fetched again
        st = os.lstat(entry)
        assert stat.S_ISREG(st.st_mode) and entry.read_bytes() == good
        before = s.sent
        assert run(capsys, "inspect", s.url(), "--json")[0] == 0
        assert s.sent - before < 4096                         # and used again


# ---------------------------------------------------------------------------------------------------
# Listings and documents with values of the wrong kind
# ---------------------------------------------------------------------------------------------------

def json_answer(obj) -> list[bytes]:
    body = json.dumps(obj).encode()
    return [head("200 OK", {"Content-Type": "application/json", "Content-Length": len(body)}), body]


@pytest.mark.parametrize("size", ["abc", "1e400", [1], True, -5])
def test_modelscope_sizes_of_the_wrong_kind_are_one_line(env, capsys, size):
    def ms(server, req):
        raw = json.dumps({"Code": 200, "Success": True, "Data": {"Files": [
            {"Path": "m-Q4_K_M.gguf", "Size": size, "Type": "blob"}]}})
        raw = raw.replace('"1e400"', "1e400") if size == "1e400" else raw
        return [head("200 OK", {"Content-Length": len(raw)}), raw.encode()]
    with Hostile(ms) as s:
        env.setenv("MODELSCOPE_ENDPOINT", f"http://127.0.0.1:{s.port}")
        code, out, err = run(capsys, "inspect", "ms://o/r", "--quant", "Q4_K_M")
    assert code == 2 and "size" in one_line(err)


def test_safetensors_index_metadata_of_the_wrong_kind(env, capsys, tmp_path):
    from planner.core.catalog import catalog

    config = catalog()["deepseek-v3"].config

    def hub(server, req):
        if req.path.endswith("/config.json"):
            return json_answer(config)
        if req.path.endswith("/model.safetensors.index.json"):
            return json_answer({"metadata": [1], "weight_map": {"w": "model-1.safetensors"}})
        return [head("404 Not Found", {"Content-Length": 0})]
    with Hostile(hub) as s:
        env.setenv("HF_ENDPOINT", f"http://127.0.0.1:{s.port}")
        code, out, err = run(capsys, "--headless", "--json", "--device", "h100", "--engine", "vllm",
                             "--model", "hf://deepseek-ai/DeepSeek-V3")
    assert code == 2 and "404" in one_line(err) and "model-1.safetensors" in err    # past the metadata


def test_amplifying_header_is_refused_after_its_first_read(env, capsys):
    import struct

    data = b"GGUF" + struct.pack("<IQQ", 3, 2_000_000, 0) + b"\0" * (80 << 20)
    with Hostile(ranged, data) as s:
        code, out, err = run(capsys, "inspect", s.url())
        cost("2M tensor infos (an 80 MB header)", s)
    from planner.remote.client import STATS

    assert code == 2 and "not read" in one_line(err)
    assert STATS["bytes"] <= MIB + 1 and s.requests == 2


def test_costs_table(capsys):
    """The bytes and requests each hostile mode cost (printed; the bounds are asserted above)."""
    with capsys.disabled():
        print()
        for mode, (n, got, sent, conns) in COSTS.items():
            print(f"  {mode}: {n} requests, {got:,} body bytes read ({sent:,} written by the server), "
                  f"{conns} connection(s)")
