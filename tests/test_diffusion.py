"""The diffusion family end to end: training lowers the bound, a run writes its metrics, grids and
denoising chains, 2D runs report the bound beside the oracle, the sampler's steps change at
sampling time, and guidance draws the class asked for."""

import json
import math

import lightning as L
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import compose_config, run_cli
from genexp.metrics.features import ClassifierFeatures
from genexp.sample import main as sample_main
from genexp.saved_run import SavedRun
from genexp.train import instantiate_data_and_model

SMALL_UNET = ["model.denoiser.widths=[16,32]", "model.denoiser.groups=4", "model.denoiser.attention_resolutions=[]"]
TINY = ["model=ddpm", "data=digits", "data.image_size=8", "data.batch_size=32", *SMALL_UNET,
        "model.schedule.steps=100", "model.sampler.steps=10", "model.preview_steps=4", "model.bound_samples=8",
        "model.eval_examples=64"]
QUIET = ["print_config=false", "trainer.enable_progress_bar=false"]


def fit(cfg, steps: int):
    L.seed_everything(0)
    datamodule, model = instantiate_data_and_model(cfg)
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, limit_val_batches=0, num_sanity_val_steps=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    return datamodule, model, trainer


def test_a_short_run_lowers_the_bound(tmp_path):
    cfg = compose_config([*TINY, "model.ema_decay=null"], tmp_path)
    datamodule, model, trainer = fit(cfg, 150)
    datamodule.setup("test")
    batch = datamodule.on_after_batch_transfer(next(iter(datamodule.test_dataloader())), 0)  # uint8 -> float
    x = model.to_model_space(batch[0])

    def bound():
        with torch.no_grad():
            terms = model.variational_bound(x, generator=torch.Generator().manual_seed(0))
        return float(terms["nll_bound"].mean())

    before = bound()
    trainer.fit(model, datamodule)
    after = bound()
    assert torch.isfinite(torch.tensor([before, after])).all()
    assert after < 0.8 * before, (before, after)


def test_a_run_writes_the_bound_grids_chains_and_loss_by_time(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli([*TINY, *QUIET, "trainer.max_epochs=2", "callbacks.sampling_chain.every_n_epochs=1",
                      f"hydra.run.dir={run_dir}"])
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    terms = [metrics[f"test/bound_{name}"] for name in ("prior", "diffusion", "decoder")]
    assert metrics["test/nll_bound"] == pytest.approx(sum(terms), rel=1e-4)
    assert metrics["test/bits_per_dim_bound"] == pytest.approx(metrics["test/nll_bound"] / (64 * math.log(2)), rel=1e-4)
    assert 0 < metrics["test/bits_per_dim_bound"] < 100 and 0 <= terms[0] < 1e-3 * metrics["test/nll_bound"]
    for path in ("samples/final.png", "samples/epoch_0001.png", "chains/final.png", "chains/epoch_0001.png"):
        assert (run_dir / path).is_file(), path
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    scalars = events.Tags()["scalars"]
    assert {f"val/loss_by_t/{band}" for band in ("0.00-0.25", "0.25-0.50", "0.50-0.75", "0.75-1.00")} <= set(scalars)
    assert {"chains", "samples"} <= set(events.Tags()["images"])


def test_2d_runs_report_the_bound_beside_the_oracle_and_draw_the_density_view(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(["model=ddpm_2d", "data=moons", "data.n_train=4096", "data.n_test=1024", "trainer.max_epochs=5",
                      "model.schedule.steps=200", "model.sampler.steps=20", *QUIET, f"hydra.run.dir={run_dir}"])
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    # A bound on the model's NLL is above the data's entropy (up to Monte Carlo error); an untrained
    # denoiser's is hundreds of nats.
    assert metrics["test/oracle_nll"] - 0.05 < metrics["test/nll_bound"] < metrics["test/oracle_nll"] + 5
    assert metrics["test/nll_bound_gap"] == pytest.approx(metrics["test/nll_bound"] - metrics["test/oracle_nll"],
                                                          abs=1e-4)
    assert (run_dir / "density" / "final.png").is_file() and (run_dir / "chains" / "final.png").is_file()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ddpm") / "run"
    result = run_cli([*TINY, *QUIET, "trainer.max_epochs=1", "test=false", "logger=none",
                      f"hydra.run.dir={run_dir}"])
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_the_sampler_changes_at_sampling_time(trained_run, tmp_path):
    def draw(*overrides):
        out = tmp_path / "-".join(overrides or ("default",))
        sample_main([f"run={trained_run}", "n=8", f"out={out}", *overrides])
        return torch.from_numpy(np.load(out / "samples_n8_seed0.npz")["images"])

    default, fewer, ddpm = draw(), draw("model.sampler.steps=3"), draw("model.sampler.name=ddpm")
    saved = SavedRun.open(trained_run)
    saved.override_model({"sampler": {"steps": 3}})
    datamodule, model = saved.build()
    with torch.no_grad():
        direct = datamodule.to_images(model.sample(8, generator=torch.Generator().manual_seed(0)))
    assert torch.allclose(fewer, direct, atol=1e-6)
    assert not torch.allclose(default, fewer) and not torch.allclose(default, ddpm)


@pytest.mark.parametrize(("override", "message"), [("model.denoiser.widths=[8,16]", "changes the network"),
                                                     ("model.no_such_key=1", "not a key of this run's model"),
                                                     ("model.sampler.steps=0", "model.sampler.steps")])
def test_sampling_refuses_keys_that_do_not_apply(trained_run, override, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        sample_main([f"run={trained_run}", "n=4", override])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_the_preview_is_deterministic_and_the_ancestral_sampler_is_not(tmp_path):
    cfg = compose_config([*TINY, "model.sampler.name=ddpm", "model.sampler.eta=0.0"], tmp_path)
    _, model = instantiate_data_and_model(cfg)
    model.eval()
    with torch.no_grad():
        a, b = (model.preview(4, generator=torch.Generator().manual_seed(s)) for s in (1, 1))
        c, d = (model.sample(4, generator=torch.Generator().manual_seed(s)) for s in (1, 2))
    assert torch.equal(a, b) and not torch.allclose(c, d)


@pytest.mark.slow
def test_guided_samples_are_of_the_class_asked_for(tmp_path):
    """A class-conditional model with label dropout, sampled with guidance: the digits classifier that
    genexp trains for its metrics reads most samples as the label they were drawn for."""
    cfg = compose_config(["model=cddpm", "data=digits", "data.image_size=8", "data.batch_size=64", *SMALL_UNET,
                          "model.schedule.steps=200", "model.sampler.steps=20", "model.guidance_scale=3.0",
                          "model.ema_decay=0.99"], tmp_path)
    datamodule, model, trainer = fit(cfg, 900)
    trainer.fit(model, datamodule)
    classifier = ClassifierFeatures(datamodule, cache_dir=str(tmp_path / "cache"))
    labels = torch.arange(10).repeat_interleave(20)
    model.eval()
    with torch.no_grad():
        images = datamodule.to_images(model.sample(len(labels), labels, torch.Generator().manual_seed(0)))
        accuracy = (classifier.logits(images).argmax(1) == labels).float().mean().item()
    assert classifier.record["test_accuracy"] > 0.9
    assert accuracy > 0.7, accuracy


def test_the_flowers_recipe_reaches_the_module(tmp_path):
    cfg = compose_config(["experiment=ddm_flowers", f"data.root={tmp_path}"], tmp_path / "run")
    assert list(cfg.data.shape) == [3, 64, 64] and cfg.data.batch_size == 64 and cfg.trainer.max_epochs == 50
    _, model = instantiate_data_and_model(cfg)
    schedule = model.schedule
    assert type(schedule).__name__ == "OffsetCosineSchedule" and schedule.continuous
    signal_rates = schedule.alpha_bar(torch.tensor([0.0, 1.0])).sqrt()
    assert torch.allclose(signal_rates, torch.tensor([0.95, 0.02]), atol=1e-6)
    widths = [blocks[0].residual.conv1.out_channels for blocks in model.denoiser.down]
    assert widths + [model.denoiser.middle[0].residual.conv1.out_channels] == [32, 64, 96, 128]
    assert all(len(blocks) == 2 for blocks in model.denoiser.down)
    assert (model.prediction, model.loss_kind, model.denoiser_ema.decay) == ("eps", "mae", 0.999)
    assert model.sampler == {"name": "ddim", "steps": 20, "eta": 0.0}
    optimizer = model.configure_optimizers()
    assert type(optimizer) is torch.optim.AdamW
    assert optimizer.param_groups[0]["lr"] == 1e-3 and optimizer.param_groups[0]["weight_decay"] == 1e-4
