"""Evaluate and sample from a saved run (a tiny run trained here)."""

import json

import numpy as np
import pytest

from conftest import run_cli
from genexp import evaluate, sample


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("saved") / "run"
    result = run_cli(["trainer.max_epochs=1", "trainer.limit_train_batches=5", "trainer.enable_progress_bar=false",
                      "print_config=false", "model.encoder.hidden_dims=[32]", "model.iwae_samples=0",
                      f"hydra.run.dir={run_dir}"])
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_evaluate_reproduces_the_test_metrics_and_scores_samples(saved_run, tmp_path, monkeypatch):
    monkeypatch.setenv("GENEXP_CACHE_DIR", str(tmp_path))
    evaluate.main([f"run={saved_run}", "n_samples=16", "n_fake=200"])
    record = json.loads((saved_run / "eval.json").read_text())
    trained = json.loads((saved_run / "metrics.json").read_text())["metrics"]
    assert record["checkpoint"] == trained_checkpoint(saved_run)
    test_keys = {k for k in trained if k.startswith("test/")}
    assert test_keys and test_keys == set(record["metrics"])
    for key in test_keys:  # the ELBO draws one latent sample per image: equal up to that noise
        assert record["metrics"][key] == pytest.approx(trained[key], rel=0.02, abs=0.05), key
    assert (saved_run / "samples" / "eval.png").stat().st_size > 500
    quality = record["sample_quality"]
    assert quality["scores"]["fid"] > 0 and 0 <= quality["scores"]["precision"] <= 1
    assert quality["provenance"]["extractor"] == "classifier" and quality["provenance"]["n_fake"] == 200
    assert quality["provenance"]["extractor_record"]["test_accuracy"] > 0.8


def trained_checkpoint(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())["best_checkpoint"]


def test_evaluate_takes_a_checkpoint_path(saved_run, capsys):
    evaluate.main([f"run={saved_run / 'checkpoints' / 'last.ckpt'}", "n_samples=4", "feature_extractor=none"])
    assert "test/loss" in capsys.readouterr().out


def test_sample_writes_png_and_npz(saved_run, tmp_path):
    sample.main([f"run={saved_run}", "n=9", "seed=3", f"out={tmp_path}"])
    arrays = np.load(tmp_path / "samples_n9_seed3.npz")
    assert arrays["images"].shape == (9, 1, 16, 16) and 0 <= arrays["images"].min() <= arrays["images"].max() <= 1
    assert (tmp_path / "samples_n9_seed3.png").stat().st_size > 200
    sample.main([f"run={saved_run}", "n=9", "seed=3", f"out={tmp_path / 'again'}"])
    assert np.array_equal(np.load(tmp_path / "again" / "samples_n9_seed3.npz")["images"], arrays["images"])


def test_a_directory_without_a_run_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main([f"run={tmp_path}"])
    assert exit_info.value.code == 2
    assert "no saved config" in capsys.readouterr().err
