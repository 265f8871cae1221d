"""Cold start of `dq-planner --headless --device h100 --json` (all schemes of DeepSeek-R1).

Target: under 0.5 s median on a 2-core machine. Each run is a fresh interpreter (what a user or a
script pays). Writes bench/out/headless.md and prints the same lines.

    python bench/bench_headless.py [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_S = 0.5


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    a = ap.parse_args()
    exe = shutil.which("dq-planner") or ""
    cmd = [exe] if exe else [sys.executable, "-m", "planner.cli"]
    cmd += ["--headless", "--device", "h100", "--json"]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="0")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)  # warm the bytecode cache
    times = []
    for _ in range(a.runs):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    lines = [
        "# headless cold start",
        f"command: {' '.join(cmd)}",
        f"runs: {a.runs}, cpus: {os.cpu_count()}",
        f"median {med:.3f} s, min {min(times):.3f} s, max {max(times):.3f} s (target < {TARGET_S} s): "
        + ("PASS" if med < TARGET_S else "OVER TARGET"),
    ]
    out = Path(__file__).resolve().parent / "out"
    out.mkdir(exist_ok=True)
    (out / "headless.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
