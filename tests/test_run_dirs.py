"""A run directory belongs to one run: a refused run changes not one byte of an earlier run, two
runs started together into one directory leave one run in it, and a single run refused before
training leaves no directory behind."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import REPO, run_cli

TINY = ["model.encoder.hidden_dims=[32]", "trainer.max_epochs=1", "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "trainer.enable_progress_bar=false"]


def tree_hashes(root: Path) -> dict[str, str]:
    """Every file below root (hidden ones too) with the hash of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    result = run_cli([*TINY, f"hydra.run.dir={run_dir}"])
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.mark.parametrize("overrides", [["model.latent_dim=4", *TINY], ["model=realnvp", "data=moons"],
                                       ["-m", "seed=1,2", *TINY]],
                         ids=["other_config", "other_model", "sweep_into_it"])
def test_a_refused_run_changes_no_byte_of_the_earlier_run(finished_run, overrides):
    before = tree_hashes(finished_run)
    assert ".hydra/config.yaml" in before and "cli.log" in before and "metrics.json" in before
    key = "hydra.sweep.dir" if "-m" in overrides else "hydra.run.dir"
    result = run_cli([*overrides, f"{key}={finished_run}"], timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"genexp: error: {finished_run} already holds a run" in result.stderr
    assert "Traceback" not in result.stderr
    assert tree_hashes(finished_run) == before


def test_two_runs_started_together_into_one_directory_leave_one_run(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen([sys.executable, "-m", "genexp", *TINY, f"seed={seed}", f"hydra.run.dir={run_dir}"],
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for seed in (11, 12)]
    results = [(run.wait(timeout=300), run.communicate()[1]) for run in runs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], [err[-2000:] for _, err in results]
    winner = 11 + [code for code, _ in results].index(0)
    loser_stderr = next(err for code, err in results if code == 2)
    assert "already holds a run" in loser_stderr
    # Everything in the directory is the winner's: its config, overrides and one run's log.
    assert OmegaConf.load(run_dir / ".hydra" / "config.yaml").seed == winner
    assert f"seed={winner}" in OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")
    assert (run_dir / "cli.log").read_text().count("`Trainer.fit` stopped") == 1


BAD = {
    "negative_lr": ["optimizer.lr=-1"],
    "zero_batch": ["data.batch_size=0"],
    "missing_data_root": ["data=mnist", "data.root=/nonexistent/genexp-data"],
    "image_size_the_net_cannot_take": ["model/encoder=conv", "model/decoder=conv", "data.image_size=10"],
    "precision_the_cpu_lacks": ["trainer.precision=16-mixed", "trainer.accelerator=cpu"],
    "more_processes_than_cores": ["trainer=ddp", f"trainer.devices={(os.cpu_count() or 1) + 1}",
                                  "trainer.accelerator=cpu"],
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_run_refused_before_training_leaves_no_directory(case, tmp_path):
    run_dir = tmp_path / "runs" / "day" / "run"  # its parents are new too
    result = run_cli([*BAD[case], f"hydra.run.dir={run_dir}"], timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "genexp: error:" in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_empty_directory_given_for_a_refused_run_is_left_empty(tmp_path):
    result = run_cli(["optimizer.lr=-1", f"hydra.run.dir={tmp_path}"], timeout=120)
    assert result.returncode == 2
    assert tmp_path.is_dir() and list(tmp_path.iterdir()) == []


def test_hardware_refusals_name_the_key_and_the_alternative(tmp_path):
    precision = run_cli(["trainer.precision=16-mixed", "trainer.accelerator=cpu", f"hydra.run.dir={tmp_path / 'a'}"])
    assert "trainer.precision=16-mixed" in precision.stderr and "bf16-mixed" in precision.stderr
    devices = run_cli(["trainer.devices=64", "trainer.accelerator=cpu", f"hydra.run.dir={tmp_path / 'b'}"])
    assert "trainer.devices=64" in devices.stderr and "cores" in devices.stderr
