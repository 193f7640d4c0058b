"""The maximum-likelihood module with each density config: sampling, refusals, dequantisation, whole runs."""

import json
import math

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import compose_config
from genexp.data.toy2d import Pinwheel
from genexp.errors import ConfigError
from genexp.train import run
from genexp.validate import validate_config

# Small versions of each config, so that the tests are quick.
SMALL = {
    "gaussian": [],
    "gmm": ["model.density.n_components=3", "model.density.init_samples=200"],
    "realnvp": ["model.density.n_couplings=2", "model.density.hidden_dims=[16]",
                "model.density.couplings_per_scale=1", "model.density.hidden_channels=8"],
    "maf": ["model.density.n_layers=2", "model.density.hidden_dims=[16]"],
    "pixelcnn": ["model.density.hidden_channels=8", "model.density.n_blocks=1", "model.density.first_kernel=3"],
}
DIGITS_8 = ["data=digits", "data.image_size=8"]


def build(tmp_path, overrides):
    cfg = compose_config(overrides, tmp_path)
    validate_config(cfg)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model, _recursive_=False, _convert_="all",
                        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True), lr_scheduler={})
    return datamodule, model


# Every density on points and on images, except PixelCNN on points (refused: see
# test_models_refuse_data_they_cannot_take).
SHAPE_CASES = [(name, data) for name in sorted(SMALL) for data in ("moons", "digits")
               if (name, data) != ("pixelcnn", "moons")]


@pytest.mark.parametrize(("name", "data"), SHAPE_CASES)
def test_samples_and_log_prob_have_the_data_shape(name, data, tmp_path):
    overrides = [f"model={name}", *SMALL[name], *(DIGITS_8 if data == "digits" else [f"data={data}"])]
    datamodule, model = build(tmp_path, overrides)
    x = datamodule.example_batch("train", 5)[0]
    if hasattr(model.density, "initialize"):
        model.density.initialize(model.dequantize(x)[0] if model.is_image else x)
    model.eval()
    with torch.no_grad():
        samples = model.sample(6, generator=torch.Generator().manual_seed(0))
        log_p = model.log_prob(x)
    assert samples.shape == (6, *datamodule.shape)
    assert log_p.shape == (5,) and torch.isfinite(log_p).all()
    if model.is_image:
        # Pixel values: on the 8-bit grid of the data's value range, and a log probability <= 0 (discrete).
        assert samples.min() >= 0 and samples.max() <= 1
        levels = samples * 255
        torch.testing.assert_close(levels, levels.round(), atol=1e-3, rtol=0)
        if model.density.discrete:
            assert (log_p <= 0).all()


@pytest.mark.parametrize(("overrides", "message"), [
    (["model=pixelcnn", "data=moons"], "model=pixelcnn"),
    (["model=realnvp", "data=moons", "model.density.mask=checkerboard"], "data.shape=[2]"),
    (["model=realnvp", "data=digits", "data.image_size=6", "model.density.n_scales=3"], "data.image_size=6"),
    (["model=realnvp", "data=moons", "model.density.mask=stripes"], "model.density.mask"),
    (["model=gaussian", "data=moons", "model.density.covariance=spherical"], "model.density.covariance"),
    (["model=pixelcnn", "data=digits", "model.density.first_kernel=4"], "model.density.first_kernel"),
])
def test_models_refuse_data_they_cannot_take(overrides, message, tmp_path):
    with pytest.raises(Exception) as caught:
        build(tmp_path, overrides)
    error = caught.value
    while error is not None and not isinstance(error, ConfigError):  # Hydra's instantiate wraps it
        error = error.__cause__
    assert isinstance(error, ConfigError), caught.value
    assert message in str(error)


def test_dequantisation_inverts_and_its_log_jacobian_is_exact(tmp_path):
    _, model = build(tmp_path, ["model=gaussian", *DIGITS_8])
    x = torch.randint(0, 256, (3, 1, 8, 8)).float() / 255
    torch.manual_seed(0)
    y, log_jacobian = model.dequantize(x)
    torch.testing.assert_close(model.quantize(y), x)
    # Brute force: the same uniform noise, then d logit(alpha + (1 - 2 alpha) u) / du by autograd.
    torch.manual_seed(0)
    u = ((x * 255).round() + torch.rand_like(x)) / 256
    u.requires_grad_(True)
    alpha = model.logit_alpha
    (grad,) = torch.autograd.grad(torch.logit(alpha + (1 - 2 * alpha) * u).sum(), u)
    expected = grad.log().flatten(1).sum(1) - 64 * math.log(256)
    torch.testing.assert_close(log_jacobian, expected)


def run_config(tmp_path, overrides):
    cfg = compose_config([*overrides, "trainer.enable_progress_bar=false"], tmp_path / "run")
    validate_config(cfg)
    run(cfg)
    return tmp_path / "run", json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]


def test_gmm_run_reports_the_oracle_gap_and_draws_density_views(tmp_path):
    run_dir, metrics = run_config(tmp_path, ["model=gmm", "data=eight_gaussians", "data.n_train=2000",
                                             "data.n_test=2000", "trainer.max_epochs=2", "logger=tensorboard",
                                             "callbacks.density_2d.grid_size=32",
                                             "callbacks.density_2d.every_n_epochs=1"])
    assert metrics["test/oracle_nll"] == pytest.approx(2.84, abs=0.05)  # the entropy of p_data
    assert metrics["test/nll_gap"] == pytest.approx(metrics["test/nll"] - metrics["test/oracle_nll"], abs=1e-5)
    assert abs(metrics["test/nll_gap"]) < 0.05
    # Fitted by EM at setup: one epoch that only validates, whatever trainer.max_epochs says.
    assert {p.name for p in (run_dir / "density").iterdir()} == {"epoch_0000.png", "final.png"}
    assert not (run_dir / "samples").exists()  # image grids skip points
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0}).Reload()
    assert len(events.Images("density")) == 1
    assert "val/nll_gap" in events.Tags()["scalars"]


def test_data_without_a_density_is_shown_as_a_histogram(tmp_path, monkeypatch):
    # A distribution whose density is unknown (as a user's own points may be).
    monkeypatch.setattr(Pinwheel, "log_prob", None)
    run_dir, metrics = run_config(tmp_path, ["model=gaussian", "data=pinwheel", "data.n_train=1000", "logger=none",
                                             "trainer.max_epochs=1", "callbacks.density_2d.grid_size=16"])
    assert "test/oracle_nll" not in metrics and math.isfinite(metrics["test/nll"])
    assert (run_dir / "density" / "final.png").is_file()


@pytest.mark.parametrize("name", ["realnvp", "pixelcnn"])
def test_image_runs_log_bits_per_dim_and_sample_grids(name, tmp_path):
    levels = ["model.density.levels=17"] if name == "pixelcnn" else []
    run_dir, metrics = run_config(tmp_path, [f"model={name}", *SMALL[name], *levels, *DIGITS_8, "logger=none",
                                             "trainer.max_epochs=1", "trainer.limit_train_batches=3",
                                             "trainer.limit_val_batches=2", "trainer.limit_test_batches=2"])
    for key in ("val/bits_per_dim", "test/bits_per_dim", "test/nll"):
        assert math.isfinite(metrics[key]), key
    assert metrics["test/bits_per_dim"] == pytest.approx(metrics["test/nll"] / (64 * math.log(2)), rel=1e-5)
    assert (run_dir / "samples" / "epoch_0000.png").is_file()
    assert not (run_dir / "density").exists()
