"""The benchmarks' smoke runs (`--quick`: a tiny model, seconds), run as their commands are written, so a change
that breaks a benchmark shows here rather than when its figures are next measured. The figures themselves are
not checked: speed is the benchmarks' business, on a quiet machine."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LLAMA_TOOLS = ROOT / ".llamacpp" / "build" / "bin"


def run(script: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", *args],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_engine_weights_section_runs():
    weights = run("engine.py", "--sections", "weights")["weights"]
    for batch in ("batch_1", "batch_4"):
        rates = weights[batch]["tokens_per_s"]
        assert set(rates) == {"float32", "int8", "q8_0", "q4_0", "bf16", "f16"} and min(rates.values()) > 0
        assert weights[batch]["vs_float32"]["float32"] == 1.0


@pytest.mark.skipif(not (LLAMA_TOOLS / "llama-batched-bench").exists(),
                    reason="llama.cpp's tools are not built here (bash benchmarks/build_llamacpp.sh builds them)")
def test_vs_llamacpp_runs(tmp_path):
    result = run("vs_llamacpp.py", "--work-dir", str(tmp_path))
    rows = result["decode_tokens_per_s"]
    assert set(rows) == {"F32", "Q8_0", "Q4_0"} and result["agreement"]["equal"]
    for row in rows.values():
        assert set(row) == {"batch_1", "batch_4", "shared_4"}
        assert all(r["swarm"] > 0 and r["llama_cpp"] > 0 and len(r["swarm_runs"]) == 1 for r in row.values())
    assert result["config"]["swarm"]["kv_dtype"] == "float16"
