"""The default run (`python -m genexp`) end to end, with a shortened schedule."""

import json
import math

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import run_cli


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("default") / "run"
    result = run_cli(["trainer.max_epochs=4", f"hydra.run.dir={run_dir}"])
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result


def test_run_dir_holds_config_checkpoints_samples_and_metrics(default_run):
    run_dir, _ = default_run
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / ".hydra" / "overrides.yaml").is_file()
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints
    assert any(name.startswith("best-epoch") for name in checkpoints)
    assert sorted(p.name for p in (run_dir / "samples").iterdir())[:4] == [f"epoch_{i:04d}.png" for i in range(4)]
    assert (run_dir / "samples" / "final.png").is_file()
    assert (run_dir / "reconstructions" / "epoch_0003.png").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert metrics["best_checkpoint"].endswith(".ckpt")
    for key in ("val/loss", "val/elbo", "test/loss", "test/elbo", "test/kl", "test/recon"):
        assert math.isfinite(metrics["metrics"][key]), key


def test_the_run_prints_its_overrides_and_directory_not_the_whole_config(default_run):
    run_dir, result = default_run
    assert result.stdout.splitlines()[:2] == [f"genexp: vae on digits -> {run_dir}", "  overrides: trainer.max_epochs=4"]
    assert "hidden_dims" not in result.stdout  # the whole config is one flag away: print_config=true


def test_tensorboard_has_scalars_images_and_hparams(default_run):
    run_dir, _ = default_run
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0}).Reload()
    tags = events.Tags()
    for tag in ("train/loss_step", "train/loss_epoch", "val/loss", "val/elbo", "test/elbo"):
        assert tag in tags["scalars"], tag
    assert {"samples", "reconstructions"} <= set(tags["images"])
    assert len(events.Images("samples")) == 4  # one grid per epoch
    assert not [tag for tag in tags["scalars"] if tag.startswith("hp/")]
    # The run's HParams row, in a run of its own: model, data, the overrides and a few headline keys,
    # beside the metrics it is judged by (the monitored one, on val and test).
    row = EventAccumulator(str(run_dir / "tensorboard" / "hparams")).Reload()
    content = row.summary_metadata["_hparams_/session_start_info"].plugin_data.content
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["model"].string_value == "vae" and hparams["data"].string_value == "digits"
    assert hparams["trainer.max_epochs"].number_value == 4
    assert hparams["optimizer.lr"].number_value == 1e-3
    assert set(row.Tags()["scalars"]) == {"val/loss", "test/loss"}


def test_elbo_improves_and_losses_are_finite(default_run):
    run_dir, _ = default_run
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    elbo = [e.value for e in events.Scalars("val/elbo")]
    losses = [e.value for e in events.Scalars("train/loss_step")]
    assert all(math.isfinite(v) for v in elbo + losses)
    assert len(elbo) == 4
    assert elbo[-1] > elbo[0] + 1.0  # nats per image
