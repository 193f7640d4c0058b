"""Under DDP every rank sees a shard of each split: validation and test metrics are means over all
ranks' data, and the run prints and records once, with what it really ran on."""

import json

import pytest

from conftest import run_cli
from genexp import evaluate
from genexp.saved_run import SavedRun

# A flow's NLL is deterministic given the weights: 2 processes must give the 1-process figure.
FLOW = ["model=realnvp", "data=moons", "data.n_train=2000", "data.n_test=2000", "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false", "callbacks.density_2d.every_n_epochs=1000"]


@pytest.mark.slow
def test_two_process_test_metrics_equal_the_one_process_test_of_the_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli([*FLOW, "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu",
                      f"hydra.run.dir={run_dir}"])
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["world_size"] == 2 and record["precision"] == "32-true" and record["accelerator"] == "cpu"
    assert result.stdout.count("genexp: realnvp on moons") == 1  # printed by rank 0 alone
    assert "sync_dist" not in result.stderr

    single = evaluate.evaluate(SavedRun.open(run_dir), feature_extractor="none")["metrics"]
    for key in ("test/nll", "test/nll_gap"):
        assert record["metrics"][key] == pytest.approx(single[key], rel=1e-5, abs=1e-6), key
