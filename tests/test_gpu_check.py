"""bench/gpu_check.sh in its dry mode (no GPU here): it says so, exits 0, and writes the report's rows."""

import os
import re
import subprocess
import sys
from pathlib import Path

from llamacpp_support import require_llama_cpp

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\| (?P<run>[^|]+) \| (?P<dev>[^|]+) \| (?P<what>[^|]+) \| (?P<pred>[\d.]*) \| (?P<meas>[\d.]*) \| "
                 r"(?P<err>[+-][\d.]+%|) \|$")


def test_dry_run_writes_predicted_vs_measured_rows(tmp_path):
    require_llama_cpp("llama-completion", "llama-fit-params")
    env = dict(os.environ, GPU_CHECK_OUT=str(tmp_path), PYTHON=sys.executable)
    r = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run"], capture_output=True, text=True,
                       env=env, timeout=600, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "no NVIDIA GPU here" in r.stdout
    lines = (tmp_path / "report.md").read_text().splitlines()
    assert lines[2] == "| run | device | what | predicted MiB | measured MiB | error |"
    rows = [m.groupdict() for m in map(ROW.match, lines[4:]) if m]
    assert len(rows) == len(lines) - 4          # every line below the header is a well-formed row
    runs = {row["run"] for row in rows}
    assert {"tiny-deepseek2-mla -fa on -ub 512", "tiny-qwen2 -fa off -ub 512", "llama-fit-params R1 Q4_K_M"} <= runs
    for row in rows:
        if row["what"] in ("weights", "KV") and row["pred"]:
            # weights and KV are exact (the mapped buffer adds at most its tensors' alignment)
            assert abs(float(row["pred"]) - float(row["meas"])) <= 0.01, row
        if row["what"] == "compute" and row["pred"]:
            assert abs(float(row["err"].rstrip("%"))) < 10, row
    assert any(row["what"] == "memory total" and float(row["meas"]) > 0 for row in rows)
