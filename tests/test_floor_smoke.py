"""The smoke set that CI also runs on the floor versions of pyproject.toml (`pytest -m floor` in
.ci/run's floor venv): the command line composes a config, and a short run of each family (VAE,
GAN, flow) trains, validates, tests, logs to TensorBoard and writes its files; the VAE run
resumes from its checkpoint; an Optuna search runs a trial as a joblib job (the sweeper and launcher
plugins); FID, KID and the Inception Score (torchmetrics) score features. Quick on purpose:
under a minute on 2 CPU cores."""

import json
import math

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import run_cli

pytestmark = pytest.mark.floor


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Data caches and the classifier of FID in a directory of the tests, not the user's."""
    return {"GENEXP_DATA_DIR": str(tmp_path_factory.mktemp("data")),
            "GENEXP_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}


def train(run_dir, env, *overrides: str) -> dict:
    result = run_cli([*overrides, "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}"], env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed", record
    return record


def finite(record: dict, *keys: str) -> bool:
    return all(math.isfinite(record["metrics"][key]) for key in keys)


def test_the_command_line_composes_a_config_without_training():
    result = run_cli(["--cfg", "job", "model=dcgan", "data=moons"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "_target_: genexp.models.gan.GAN" in result.stdout
    assert "_target_: genexp.data.toy2d.Toy2DDataModule" in result.stdout


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory, env):
    run_dir = tmp_path_factory.mktemp("vae") / "run"
    return run_dir, train(run_dir, env, "trainer.max_epochs=2", "trainer.log_every_n_steps=10")


def test_a_vae_run_logs_at_lightnings_steps_and_writes_its_files(vae_run):
    run_dir, record = vae_run
    assert finite(record, "val/loss", "test/elbo", "test/nll_iwae")
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "samples" / "final.png").is_file()
    assert (run_dir / "reconstructions" / "epoch_0001.png").is_file()
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    steps = [event.step for event in events.Scalars("train/loss_step")]
    # Every 10th batch, at the step Lightning logs its own step metrics at (counted from 0).
    assert steps and {step % 10 for step in steps} == {9}
    assert "val/loss" in events.Tags()["scalars"]


def test_the_vae_run_resumes_from_its_last_checkpoint(vae_run, env):
    run_dir, _ = vae_run
    result = run_cli([f"resume={run_dir}", "trainer.max_epochs=3"], env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed" and finite(record, "test/elbo")
    assert (run_dir / "samples" / "epoch_0002.png").is_file()


def test_a_gan_run_trains_both_networks(tmp_path, env):
    record = train(tmp_path / "run", env, "model=dcgan", "data.image_size=8", "data.value_range=[-1,1]",
                   "model.generator.width=4", "model.discriminator.width=4",
                   "model.latent_dim=8", "model.eval_examples=32",
                   "trainer.max_epochs=1", "trainer.limit_train_batches=6", "trainer.limit_val_batches=2",
                   "trainer.limit_test_batches=2", "trainer.log_every_n_steps=2")
    assert finite(record, "train/d_loss", "train/g_loss", "val/pixel_mmd", "test/pixel_mmd")


def test_a_flow_run_fits_a_density(tmp_path, env):
    record = train(tmp_path / "run", env, "model=realnvp", "data=moons", "data.n_train=2000", "data.n_val=500",
                   "data.n_test=500", "model.density.n_couplings=2", "model.density.hidden_dims=[16]",
                   "trainer.max_epochs=2", "callbacks.density_2d.grid_size=16")
    assert finite(record, "val/nll", "test/nll", "test/nll_gap")
    assert (tmp_path / "run" / "density" / "final.png").is_file()


def test_an_optuna_search_runs_a_trial_through_the_joblib_launcher(tmp_path, env):
    sweep_dir = tmp_path / "search"
    result = run_cli(["hparams_search=vae_optuna", "hydra/launcher=parallel", "hydra.launcher.n_jobs=1",
                      "hydra.sweeper.n_trials=1", f"hydra.sweep.dir={sweep_dir}", "trainer.max_epochs=1",
                      "trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2",
                      "trainer.enable_progress_bar=false"], env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert math.isfinite(yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())["best_value"])


def test_fid_kid_and_inception_score_of_features():
    import torch

    from genexp.metrics.sample_quality import sample_quality

    generator = torch.Generator().manual_seed(0)
    real = torch.randn(200, 8, generator=generator, dtype=torch.float64)
    itself = sample_quality(real, real, kid_subset_size=100, fake_logits=torch.randn(200, 10, generator=generator))
    shifted = sample_quality(real, real + 3.0, kid_subset_size=100)
    assert abs(itself["fid"]) < 1e-3 and shifted["fid"] == pytest.approx(8 * 3.0**2, rel=1e-3)  # |mean shift|^2
    assert shifted["kid_mean"] > 100 * abs(itself["kid_mean"])
    assert 1.0 <= itself["is_mean"] <= 10.0
