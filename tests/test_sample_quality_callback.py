"""FID & co. during training (callbacks=with_fid) as the monitored value of the checkpoint."""

import json
from pathlib import Path

import pytest
import torch

from conftest import compose_config
from genexp.train import run


def test_fid_is_logged_and_picks_the_best_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("GENEXP_CACHE_DIR", str(tmp_path / "cache"))
    cfg = compose_config(["model=dcgan", "data=digits", "callbacks=with_fid", "model.monitor=val/fid",
                          "trainer.max_epochs=2", "trainer.limit_train_batches=3", "trainer.enable_progress_bar=false",
                          "logger=none", "callbacks.sample_quality.n_samples=64"], tmp_path / "run")
    returned = run(cfg)
    run_dir = tmp_path / "run"
    record = json.loads((run_dir / "sample_quality.json").read_text())
    fids = {entry["epoch"]: entry["fid"] for entry in record["history"]}
    assert sorted(fids) == [0, 1] and all(fid > 0 for fid in fids.values())
    best_epoch = min(fids, key=fids.get)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["monitor"] == "val/fid"
    assert Path(metrics["best_checkpoint"]).name == f"best-epoch{best_epoch:04d}.ckpt"
    checkpoint = torch.load(metrics["best_checkpoint"], weights_only=True)
    callback_state = next(v for k, v in checkpoint["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert callback_state["best_model_score"].item() == pytest.approx(fids[best_epoch], rel=1e-5)
    assert returned == pytest.approx(fids[1], rel=1e-5)  # the sweep objective: the last logged FID
    assert {"val/fid", "val/kid", "val/precision", "val/recall", "val/is"} <= set(metrics["metrics"])
    provenance = record["provenance"]
    assert provenance["reference"].endswith("/val") and provenance["n_fake"] == 64
    assert provenance["extractor"] == "classifier"
