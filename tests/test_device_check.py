"""scripts/device_check.sh runs as a dry run on the CPU and writes every entry of the GPU check:
measured ones with finite ratios and memory fields, the others skipped with a reason."""

import json
import math
import os
import subprocess
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import benchmark  # noqa: E402


@pytest.mark.slow
def test_the_dry_run_writes_every_entry_with_finite_ratios(tmp_path):
    out = tmp_path / "check.json"
    env = {**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(["bash", "scripts/device_check.sh", str(out)], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    check = json.loads(out.read_text())
    assert check["mode"] == "device-check dry run" and check["machine"]["gpu"] is None
    entries = check["entries"]
    assert set(entries) == set(benchmark.device_check_plan(dry_run=True))
    for model in ("vae_16", "dcgan_16", "ddpm_16"):
        for variant in ("32-true", "bf16-mixed", "bf16-mixed/channels_last", "bf16-mixed/preloaded",
                        "16-mixed", "bf16-mixed/compiled"):
            assert f"{model}/{variant}" in entries
    skipped = {name for name, e in entries.items() if "skipped" in e}
    assert {name for name in entries if "16-mixed" in name.split("/")[1:2]} <= skipped
    assert {name for name in entries if name.endswith(("channels_last", "preloaded"))} <= skipped
    assert "vae_16/bf16-mixed/compiled" not in skipped and entries["vae_16/bf16-mixed/compiled"]["compiled"]
    for name, e in entries.items():
        if name in skipped:
            assert e["skipped"], name  # a reason
            continue
        for key in ("genexp", "bare", "baseline", "ratio", "step_ms"):
            assert math.isfinite(e[key]) and e[key] > 0, (name, key)
        for target in ("genexp/bare", "genexp/plain"):
            assert math.isfinite(e["targets"][target]["ratio"]) and "met" in e["targets"][target]
        assert set(e["peak_memory_mib"]) == {"plain", "bare", "genexp"}  # None on the CPU
        assert e["precision"] == name.split("/")[1]
    table = out.with_suffix(".md").read_text()
    assert "| vae_16/32-true |" in table and "16-mixed: skipped (16-mixed needs a CUDA GPU" in table


def test_the_gpu_plan_measures_every_variant_and_skips_none_but_channels_last_of_the_mlp():
    plan = benchmark.device_check_plan(dry_run=False)
    assert len(plan) == 3 * 6
    assert [name for name, p in plan.items() if isinstance(p, str)] == ["vae_28/bf16-mixed/channels_last"]
    assert plan["ddpm_28/16-mixed"] == {"precision": "16-mixed"}
    assert plan["dcgan_28/bf16-mixed/compiled"] == {"precision": "bf16-mixed", "compile": "default"}
