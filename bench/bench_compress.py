"""Wall time of `dq-planner quantize --engine vllm` (llm-compressor, the compress extra) per format on the
tiny generated checkpoints of the tests (tests/tiny_checkpoints.py: a dense Qwen2, a DeepSeek-V3-shaped
MoE), each run a fresh child as a user's is (the interpreter with torch and llm-compressor imported, the
model loaded, quantized, saved, verified against the plan, published). Calibration: 4 samples of 16 tokens.

Writes bench/out/compress.md and prints the same lines.

    python bench/bench_compress.py [--runs 1] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCHEMES = ("FP8-dynamic", "W8A8", "W4A16")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--threads", type=int)
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_checkpoints import CALIBRATION_LINES, KINDS, write_checkpoint

    lines = [f"# llm-compressor quantize times (tiny checkpoints; {os.cpu_count()} CPUs, {platform.machine()}, "
             f"{time.strftime('%Y-%m-%d')})", "", "| model | scheme | runs | seconds (each run) |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as td:
        calib = Path(td) / "calib.txt"
        calib.write_text("\n".join(CALIBRATION_LINES) + "\n")
        for kind in KINDS:
            src = write_checkpoint(kind, Path(td) / kind)
            for scheme in SCHEMES:
                times = []
                for i in range(a.runs):
                    out = Path(td) / f"{kind}-{scheme}-{i}"
                    argv = [sys.executable, "-m", "planner.cli", "quantize", "--engine", "vllm", "--input", str(src),
                            "--scheme", scheme, "--output", str(out), "--calibration", str(calib), "--samples", "4",
                            "--max-seq-len", "16"] + (["--threads", str(a.threads)] if a.threads else [])
                    t0 = time.monotonic()
                    r = subprocess.run(argv, capture_output=True, text=True)
                    if r.returncode != 0:
                        print(r.stderr[-2000:], file=sys.stderr)
                        return 1
                    times.append(time.monotonic() - t0)
                row = f"| {kind} | {scheme} | {a.runs} | {', '.join(f'{t:.1f}' for t in times)} |"
                lines.append(row)
                print(row, flush=True)
    (ROOT / "bench" / "out").mkdir(exist_ok=True)
    (ROOT / "bench" / "out" / "compress.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
