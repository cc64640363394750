"""The prepared GPU check (bench/gpu_check.py) runs end to end on this CPU in its dry mode, so the
script cannot rot between the rare sessions that have a GPU machine to run it on."""

from __future__ import annotations

import json
import subprocess
import sys

from tests import infra

SECTIONS = {"1 versions", "2 probes", "3 run()", "4 1B step", "5 vs TRL", "6 ranks"}
METHODS = {"dpo", "sft", "reward model", "rebel", "refuel"}


def test_the_gpu_check_runs_dry_on_cpu(tmp_path, model_cache):
    done = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--dry", "--out", str(tmp_path),
                           "--cache-dir", str(model_cache)], cwd=infra.REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = json.loads((tmp_path / "gpu_check_dry.json").read_text())
    assert {r["section"] for r in rows} == SECTIONS
    assert not [r for r in rows if r["result"] == "FAILED"]
    ran = {r["check"] for r in rows if r["section"] == "3 run()" and r["result"] == "ok"}
    assert METHODS <= ran and any(c.startswith("dpo resumed") for c in ran)
    assert "| 4 1B step |" in (tmp_path / "gpu_check_dry.md").read_text()
    ranks = {r["check"].split()[0]: r for r in rows if r["section"] == "6 ranks"}
    assert set(ranks) == {"ddp", "fsdp"}  # each on two gloo ranks against one process
    assert all(r["ranks"]["ranks"] == 2 and r["one"]["ranks"] == 1 and r["ranks"]["pairs_per_second"] > 0
               for r in ranks.values())
