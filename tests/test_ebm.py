"""Energy-based models: Langevin sampling, the grid normalisation, the replay buffer, the protocol
(seeded samples, sampling chains), training by contrastive divergence, the divergence guard and
the book's MNIST recipe."""

import math

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose_config
from genexp.errors import ConfigError, DivergedError
from genexp.models.ebm import EnergyBasedModel, grid_log_partition
from genexp.models.langevin import ReplayBuffer, langevin, uniform
from genexp.nets.energy import ConvEnergy
from genexp.train import instantiate_data_and_model, run

POINTS = ["data=moons", "data.n_train=1024", "data.n_val=256", "data.n_test=256", "data.batch_size=128",
          "model.buffer_size=512", "model.steps=20", "model.sample_steps=50", "model.preview_steps=10",
          "model.eval_examples=64", "model.grid_size=64", "model.energy.hidden_dims=[32,32]"]
OPTIMIZER = {"_target_": "torch.optim.Adam", "lr": 1e-3}


def small_model(shape=(2,), value_range=None, **keys) -> EnergyBasedModel:
    torch.manual_seed(0)
    energy = {"_target_": "genexp.nets.energy.MLPEnergy", "hidden_dims": [16, 16]}
    settings = {"steps": 5, "sample_steps": 20, "preview_steps": 4, "buffer_size": 64, "eval_examples": 8} | keys
    return EnergyBasedModel(shape=list(shape), value_range=value_range, energy=energy, optimizer=OPTIMIZER, **settings)


def gaussian_energy(mean: torch.Tensor, cov: torch.Tensor):
    precision = torch.linalg.inv(cov)

    def energy(x: torch.Tensor) -> torch.Tensor:
        d = x - mean
        return 0.5 * torch.einsum("ni,ij,nj->n", d, precision, d)

    return energy


def test_langevin_with_the_true_energy_reproduces_a_gaussian():
    mean, cov = torch.tensor([1.0, -2.0]), torch.tensor([[1.0, 0.5], [0.5, 2.0]])
    energy = gaussian_energy(mean, cov)
    start = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0))
    # Exact Langevin: noise std sqrt(2 * step_size) (noise=None), no clipping, no bounds.
    x = langevin(energy, start, steps=2000, step_size=0.01, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(x.mean(0), mean, atol=0.08), x.mean(0)
    assert torch.allclose(torch.cov(x.T), cov, atol=0.12), torch.cov(x.T)
    # A cold chain (the image EBMs' small noise) collapses onto the mode instead.
    cold = langevin(energy, start, steps=2000, step_size=0.01, noise=0.005, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(cold.mean(0), mean, atol=0.08)
    assert torch.linalg.eigvalsh(torch.cov(cold.T)).max() < 0.01


def test_langevin_clips_gradients_and_clamps_to_the_bounds():
    energy = gaussian_energy(torch.tensor([10.0]), torch.eye(1))  # pulls hard towards 10
    x = langevin(energy, torch.zeros(3, 1), steps=1, step_size=1.0, noise=0.0, grad_clip=0.5)
    assert torch.allclose(x, torch.full((3, 1), 0.5))  # the gradient -10 was clipped to -0.5
    x = langevin(energy, torch.zeros(3, 1), steps=5, step_size=1.0, noise=0.0, bounds=(-1.0, 1.0))
    assert torch.equal(x, torch.ones(3, 1))


@pytest.mark.parametrize("sigma", [0.3, 1.5])
def test_grid_normalisation_of_a_gaussian_energy_gives_its_log_partition(sigma):
    mean = torch.tensor([0.5, -1.0])
    energy = gaussian_energy(mean, sigma**2 * torch.eye(2))
    low, high = mean - 8 * sigma, mean + 8 * sigma
    log_z = grid_log_partition(energy, low, high, grid_size=256)
    assert math.isclose(float(log_z), math.log(2 * math.pi * sigma**2), abs_tol=1e-3)
    # An energy shifted by a constant c has log Z - c; in 1D, log sqrt(2 pi sigma^2).
    assert math.isclose(float(grid_log_partition(lambda x: energy(x) + 3.0, low, high, 256)), float(log_z) - 3.0,
                        abs_tol=1e-4)
    log_z_1d = grid_log_partition(lambda x: 0.5 * (x[:, 0] / sigma) ** 2, torch.tensor([-8 * sigma]),
                                  torch.tensor([8 * sigma]), grid_size=256)
    assert math.isclose(float(log_z_1d), 0.5 * math.log(2 * math.pi * sigma**2), abs_tol=1e-3)


def test_log_prob_is_normalised_over_the_box():
    model = small_model(grid_size=128)
    model.buffer.reset(torch.tensor([-2.0, -3.0]), torch.tensor([2.0, 1.0]))
    low, high = model.bounds
    axes = [torch.linspace(float(low[d]), float(high[d]), 201) for d in range(2)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 2)
    with torch.no_grad():
        density = model.log_prob(grid).exp().view(201, 201)
    area = torch.trapezoid(torch.trapezoid(density, axes[1], dim=1), axes[0])
    assert math.isclose(float(area), 1.0, abs_tol=0.01)


def test_replay_buffer_keeps_its_size_and_its_share_of_fresh_noise():
    torch.manual_seed(0)
    buffer = ReplayBuffer(100, (2,), fresh_fraction=0.25)
    buffer.reset(torch.tensor([-1.0, -1.0]), torch.tensor([1.0, 1.0]))
    buffer.samples.fill_(5.0)  # outside the box: a start drawn from the buffer is told from fresh noise
    fresh_counts = []
    for _ in range(200):
        starts, fresh = buffer.draw(64)
        assert torch.equal(fresh, (starts.abs() <= 1.0).all(1))
        assert torch.equal(starts[~fresh], torch.full_like(starts[~fresh], 5.0))
        fresh_counts.append(fresh.float().mean())
        buffer.store(torch.full_like(starts, 5.0))  # the chains' end points go back where they came from
    assert len(buffer) == 100 and buffer.samples.shape == (100, 2)
    assert math.isclose(float(torch.stack(fresh_counts).mean()), 0.25, abs_tol=0.02)
    starts, _ = buffer.draw(8)
    buffer.store(torch.arange(16.0).view(8, 2))
    assert torch.equal(buffer.samples[buffer.indices[-1]], torch.tensor([14.0, 15.0]))


def test_sample_is_deterministic_given_a_seeded_generator():
    model = small_model()
    first = model.sample(32, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(123)  # the global random state plays no part
    again = model.sample(32, generator=torch.Generator().manual_seed(3))
    other = model.sample(32, generator=torch.Generator().manual_seed(4))
    assert first.shape == (32, 2) and torch.equal(first, again) and not torch.equal(first, other)


@pytest.mark.parametrize(("shape", "value_range"), [((2,), None), ((1, 8, 8), [0.0, 1.0])])
def test_sampling_chain_runs_from_noise_to_the_samples(shape, value_range):
    model = small_model(shape, value_range)
    frames = model.sampling_chain(6, 5, generator=torch.Generator().manual_seed(7))
    assert frames.shape == (5, 6, *shape)
    noise = model.to_data(uniform(6, *model.bounds, torch.Generator().manual_seed(7)))
    assert torch.equal(frames[0], noise)
    assert torch.allclose(frames[-1], model.sample(6, generator=torch.Generator().manual_seed(7)))
    assert not torch.equal(frames[1], frames[0])
    if value_range is not None:  # images come back in the data's range
        assert frames.min() >= 0.0 and frames.max() <= 1.0
    preview = model.sampling_chain(6, 3, generator=torch.Generator().manual_seed(7), preview=True)
    assert torch.allclose(preview[-1], model.preview(6, generator=torch.Generator().manual_seed(7)))
    with pytest.raises(ValueError, match="n_frames"):
        model.sampling_chain(6, 1)


def test_images_are_modelled_in_minus_one_to_one_and_need_a_value_range():
    model = small_model((1, 8, 8), [0.0, 1.0])
    x = torch.rand(4, 1, 8, 8)
    assert torch.allclose(model.to_model(torch.zeros(1)), torch.tensor([-1.0]))
    assert torch.allclose(model.to_data(model.to_model(x)), x)
    with pytest.raises(ConfigError, match="data.value_range"):
        small_model((1, 8, 8), None)
    with pytest.raises(ConfigError, match="data.shape"):
        ConvEnergy((2,), channels=[8])
    with pytest.raises(NotImplementedError, match="1D or 2D"):
        model.log_prob(x)
    with pytest.raises(ConfigError, match="model.preview_steps=30 .* model.sample_steps=20"):
        small_model(preview_steps=30)


def fit(model, overrides, tmp_path, batches):
    cfg = compose_config(["model=ebm_2d", *overrides], tmp_path)
    L.seed_everything(0)
    datamodule, built = instantiate_data_and_model(cfg)
    model = model or built
    trainer = L.Trainer(accelerator="cpu", max_steps=batches, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule)
    return model, datamodule


def energy_gap(model, datamodule) -> float:
    """Mean energy of uniform noise over the box minus that of validation data."""
    data = datamodule.example_batch("val", 256)[0]
    with torch.no_grad():
        noise = uniform(256, *model.bounds, torch.Generator().manual_seed(0))
        return float(model.energy(noise).mean() - model.energy(data).mean())


def test_a_short_run_lowers_the_energy_of_data_relative_to_noise(tmp_path):
    model, datamodule = fit(None, POINTS, tmp_path, batches=1)
    before = energy_gap(model, datamodule)
    fit(model, POINTS, tmp_path, batches=100)
    after = energy_gap(model, datamodule)
    assert abs(before) < 0.5 and after > 1.5, (before, after)


class BlowUpChainsAfterFirstEpoch(L.Callback):
    """From the second epoch on, Langevin steps so large that every chain ends on the bounds."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch >= 1:
            pl_module.step_size = 1e6


def test_saturated_chains_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path):
    cfg = compose_config(["model=ebm_2d", *POINTS, "data.n_train=256", "trainer.max_epochs=3", "logger=none",
                          "trainer.enable_progress_bar=false", "+callbacks.blow_up._target_=test_ebm.BlowUpChainsAfterFirstEpoch"],
                         tmp_path)
    with pytest.raises(DivergedError, match=r"100.0% of the Langevin samples' values are at the bounds .* at step 2 "
                                            r"\(epoch 1\).*model.max_saturation=1.0.*model.step_size"):
        run(cfg)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 0 and all(w.isfinite().all() for w in last["state_dict"].values())


def test_a_diverging_energy_of_real_data_stops_the_run():
    model = small_model(max_energy=50.0)
    model.check_divergence(torch.full((4,), -49.0), torch.zeros(4, 2))  # within the limit
    with pytest.raises(DivergedError, match=r"mean \|energy\| of real data is 51 .*model.max_energy=50.0.*optimizer.lr"):
        model.check_divergence(torch.full((4,), 51.0), torch.zeros(4, 2))
    with pytest.raises(DivergedError, match="is nan"):
        model.check_divergence(torch.full((4,), float("nan")), torch.zeros(4, 2))


def test_the_mnist_recipe_reaches_the_module(tmp_path):
    cfg = compose_config(["experiment=ebm_mnist"], tmp_path)
    assert OmegaConf.to_container(cfg.data.shape, resolve=True) == [1, 32, 32] and cfg.data.pad == 2
    assert list(cfg.data.value_range) == [-1.0, 1.0] and cfg.data.batch_size == 128 and cfg.trainer.max_epochs == 60
    _, model = instantiate_data_and_model(cfg)
    assert isinstance(model.energy, ConvEnergy)
    assert (model.steps, model.step_size, model.noise, model.grad_clip) == (60, 10.0, 0.005, 0.03)
    assert (len(model.buffer), model.buffer.fresh_fraction, model.alpha) == (8192, 0.05, 0.1)
    optimizer = model.configure_optimizers()
    assert type(optimizer) is torch.optim.Adam and optimizer.param_groups[0]["lr"] == 1e-4
    convs = [m for m in model.energy.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [(16, 5, 2), (32, 3, 2), (64, 3, 2),
                                                                             (64, 3, 2)]
