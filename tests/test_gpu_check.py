"""benchmarks/gpu_check.py, the prepared GPU check, runs every step on a CPU at its tiny size."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_at_its_tiny_size_on_a_cpu(tmp_path):
    out = tmp_path / "check.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--tiny", "--device", "cpu",
                           "--precision", "fp32", "--workers", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| step | size | result |" in done.stdout
    steps = [row[0] for row in json.loads(out.read_text())["rows"]]
    assert any(s.startswith("train c8_steerable") for s in steps) and any(s.startswith("resume resnet50") for s in steps)
    assert any(s.startswith("predict") for s in steps)
    resume = {row[0]: row[2] for row in json.loads(out.read_text())["rows"]}
    assert resume["resume c8_steerable"] == "identical weights"  # exact on a CPU
