"""Energy-based models trained by contrastive divergence with Langevin sampling.

An energy net E_theta (genexp.nets.energy) defines p_theta(x) = exp(-E_theta(x)) / Z_theta: low
energy, high probability (LeCun et al. 2006). The log-likelihood's gradient is
    grad_theta log p_theta(x) = -grad_theta E_theta(x) + E_{x~ ~ p_theta}[grad_theta E_theta(x~)],
so its estimate lowers the energy of data and raises that of samples from the model. The samples
x~ come from short Langevin chains (genexp.models.langevin) started from a replay buffer of past
chains, a few percent of them from fresh uniform noise (Du & Mordatch 2019). The loss is
    mean E(x) - mean E(x~) + alpha * mean(E(x)^2 + E(x~)^2),
the contrastive divergence (Hinton 2002) plus a penalty that keeps the energies near 0, since
only their differences matter. Foster (2023, ch. 7) writes the same loss with the net's output
as a score s = -E (high for data): mean s(x~) - mean s(x) + alpha * mean(s(x)^2 + s(x~)^2).

Images are modelled in [-1, 1] whatever data.value_range is (mapped linearly both ways); vectors
(the 2D sets) as they are, in a square box around the training data with a margin. Chains start
from uniform noise in that range and are clamped to it.

Likelihood: Z_theta is intractable in general, but on 1D or 2D data it is a sum over a grid,
    log Z = logsumexp(-E(grid)) + log(cell volume),
over the box, so log_prob(x) = -E(x) - log Z, the validation NLL and the Density2D heat-map of
exp(-E) / Z exist there. Images have no likelihood: validation compares the energies of data and
of uniform noise, and compares validation images with cheap samples by pixel MMD
(genexp.metrics.pixel_mmd), the default checkpoint monitor for all data.

Runs that go wrong are stopped with a DivergedError, keeping the last good checkpoint: when the
energy of real data leaves [-max_energy, max_energy] or is not finite, and when the Langevin
samples pile up at the bounds of the range (a share of their values of at least max_saturation).
"""

import math
from typing import Any

import torch
from torch import Tensor, nn

from genexp.errors import ConfigError, DivergedError
from genexp.metrics.pixel_mmd import PixelMMD
from genexp.models.base import GenerativeModule, build_net
from genexp.models.langevin import ReplayBuffer, langevin, uniform
from genexp.value_range import from_unit, to_unit

BOX_MARGIN = 0.1  # vectors: the box reaches this share of the data's widest span beyond it, on each side
EXTENT_EXAMPLES = 20000  # training examples the box is measured on


def grid_log_partition(energy, low: Tensor, high: Tensor, grid_size: int) -> Tensor:
    """log Z = log of the integral of exp(-E) over the box [low, high] (1D or 2D), by the midpoint
    rule on grid_size cells per axis: logsumexp(-E(cell centres)) + log(cell volume)."""
    steps = (high - low) / grid_size
    axes = [low[d] + (torch.arange(grid_size, device=low.device) + 0.5) * steps[d] for d in range(len(low))]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(low))
    with torch.no_grad():
        return torch.logsumexp(-energy(grid).float(), dim=0) + steps.log().sum()


class EnergyBasedModel(GenerativeModule):
    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"steps": "int >= 0", "step_size": "number > 0", "noise": "number >= 0", "grad_clip": "number > 0",
                    "buffer_size": "int >= 1", "fresh_fraction": "number in [0, 1]", "alpha": "number >= 0",
                    "real_noise": "number >= 0", "sample_steps": "int >= 0", "preview_steps": "int >= 0",
                    "grid_size": "int >= 2", "eval_examples": "int >= 2", "max_energy": "number > 0",
                    "max_saturation": "number in (0, 1]"}

    def __init__(
        self,
        shape: list[int],
        value_range: list[float] | None,
        energy: dict[str, Any],
        steps: int = 60,
        step_size: float = 10.0,
        noise: float | None = 0.005,
        grad_clip: float | None = 0.03,
        buffer_size: int = 8192,
        fresh_fraction: float = 0.05,
        alpha: float = 0.1,
        real_noise: float = 0.0,
        sample_steps: int = 1000,
        preview_steps: int = 60,
        grid_size: int = 256,
        eval_examples: int = 256,
        max_energy: float = 1000.0,
        max_saturation: float = 1.0,
        **base,
    ) -> None:
        super().__init__(**base)
        self.shape = tuple(int(s) for s in shape)
        self.is_image = len(self.shape) == 3
        if self.is_image and (value_range is None or len(value_range) != 2 or value_range[0] >= value_range[1]):
            raise ConfigError(f"model.value_range={value_range} (from data.value_range) must be [low, high] for "
                              f"images, e.g. [-1, 1] or [0, 1]")
        if not self.is_image and value_range is not None:
            raise ConfigError(f"model.value_range={value_range} (from data.value_range) must be null for vectors: "
                              f"they are modelled as they are")
        if preview_steps > sample_steps:
            raise ConfigError(f"model.preview_steps={preview_steps} is the cheap chain of the views drawn while "
                              f"training: it must not exceed model.sample_steps={sample_steps}")
        if self.monitor.split("/")[-1] in ("nll", "oracle_nll", "nll_gap") and (self.is_image or math.prod(self.shape) > 2):
            raise ConfigError(f"model.monitor={self.monitor} needs a likelihood, which an energy-based model has on "
                              f"1D and 2D data only (data.shape={list(self.shape)}): use model.monitor=val/pixel_mmd, "
                              f"or model=ebm for images")
        self.save_hyperparameters()
        self.value_range = tuple(float(v) for v in value_range) if self.is_image else None
        self.steps, self.step_size, self.noise, self.grad_clip = steps, step_size, noise, grad_clip
        self.alpha = alpha
        self.real_noise = real_noise
        self.sample_steps, self.preview_steps = sample_steps, preview_steps
        self.grid_size = grid_size
        self.max_energy, self.max_saturation = max_energy, max_saturation
        # A likelihood where the partition function is a sum over a grid: 1D and 2D vectors.
        self.has_likelihood = not self.is_image and math.prod(self.shape) <= 2
        self.energy = build_net(energy, shape=self.shape)
        self.buffer = ReplayBuffer(buffer_size, self.shape, fresh_fraction)
        self.buffer.reset(torch.full(self.shape, -1.0), torch.full(self.shape, 1.0))
        self.pixel_mmd = nn.ModuleDict({stage: PixelMMD(eval_examples) for stage in ("val", "test")})
        self.log_z: Tensor | None = None  # of the weights being evaluated

    # --- data space <-> the space the energy sees --------------------------------------------
    def to_model(self, x: Tensor) -> Tensor:
        return x if self.value_range is None else 2.0 * to_unit(x, self.value_range) - 1.0

    def to_data(self, y: Tensor) -> Tensor:
        return y if self.value_range is None else from_unit((y + 1.0) / 2.0, self.value_range)

    @property
    def bounds(self) -> tuple[Tensor, Tensor]:
        """The box chains start in and are clamped to, in the model's space."""
        return self.buffer.low, self.buffer.high

    def setup(self, stage: str) -> None:
        # Before any checkpoint is restored, so a resumed run keeps its box and buffer.
        if stage != "fit":
            return
        datamodule = self.trainer.datamodule
        low, high = self.bounds
        if not self.is_image and hasattr(datamodule, "example_batch"):
            points = datamodule.example_batch("train", EXTENT_EXAMPLES)[0].float().flatten(1)
            centre = (points.max(0).values + points.min(0).values) / 2
            half = (0.5 + BOX_MARGIN) * (points.max(0).values - points.min(0).values).max()  # a square box
            low, high = (centre - half).view(self.shape), (centre + half).view(self.shape)
        self.buffer.reset(low.to(self.buffer.low.device), high.to(self.buffer.low.device))

    # --- sampling -------------------------------------------------------------------------------
    def chain(self, x: Tensor, steps: int, generator: torch.Generator | None = None, on_step=None) -> Tensor:
        """Langevin chains of `steps` steps from x (model space) with the model's settings."""
        return langevin(self.energy, x, steps, self.step_size, self.noise, self.grad_clip, self.bounds,
                        generator=generator, on_step=on_step)

    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Chains of `sample_steps` steps from fresh uniform noise, all drawn from `generator` if given."""
        return self.to_data(self.chain(uniform(n, *self.bounds, generator), self.sample_steps, generator))

    def preview(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """As sample, with chains of `preview_steps` steps."""
        return self.to_data(self.chain(uniform(n, *self.bounds, generator), self.preview_steps, generator))

    def sampling_chain(self, n: int, n_frames: int, generator: torch.Generator | None = None,
                       preview: bool = False) -> Tensor:
        """(n_frames, n, *shape) in data space: the chains of `sample` (of `preview` if `preview`) at evenly
        spaced steps, from the starting noise (first frame) to the samples (last frame)."""
        if n_frames < 2:
            raise ValueError(f"n_frames={n_frames}: a chain is shown from its noise to its samples, at least 2 frames")
        steps = self.preview_steps if preview else self.sample_steps
        kept = torch.linspace(0, steps, n_frames).round().long().tolist()
        frames = {0: uniform(n, *self.bounds, generator)}

        def keep(step: int, x: Tensor) -> None:
            if step in kept:
                frames[step] = x.detach()

        self.chain(frames[0], steps, generator, on_step=keep)
        return self.to_data(torch.stack([frames[step] for step in kept]))

    # --- likelihood (1D and 2D data) --------------------------------------------------------------
    def log_partition(self) -> Tensor:
        return grid_log_partition(self.energy, *(b.flatten() for b in self.bounds), self.grid_size)

    def log_prob(self, x: Tensor) -> Tensor:
        """log p_theta(x) = -E(x) - log Z per example, with Z summed over a grid over the box (1D, 2D data)."""
        if not self.has_likelihood:
            raise NotImplementedError(f"an energy-based model's likelihood is computed on 1D or 2D data only "
                                      f"(data.shape={list(self.shape)}): its partition function is intractable")
        log_z = self.log_z if self.log_z is not None else self.log_partition()
        return -self.energy(x).float() - log_z

    # --- training -------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> Tensor:
        real = self.to_model(batch[0])
        if self.real_noise:
            real = torch.clamp(real + self.real_noise * torch.randn_like(real), *self.bounds)
        starts, _ = self.buffer.draw(len(real))
        fake = self.chain(starts, self.steps).to(real.dtype)
        self.buffer.store(fake)
        energy_real, energy_fake = self.energy(torch.cat([real, fake])).float().split(len(real))
        loss = energy_real.mean() - energy_fake.mean() + self.alpha * (energy_real**2 + energy_fake**2).mean()
        self.check_divergence(energy_real, fake)
        gap = (energy_fake.mean() - energy_real.mean()).detach()
        self.log_train({"train/loss": loss.detach(), "train/energy_real": energy_real.mean().detach(),
                        "train/energy_fake": energy_fake.mean().detach(), "train/energy_gap": gap}, len(real))
        return loss

    def check_divergence(self, energy_real: Tensor, fake: Tensor) -> None:
        """Stop the run (DivergedError, before this step's update) when the energy of real data diverges
        or the chains pile up at the bounds of the range."""
        low, high = self.bounds
        saturation = ((fake <= low) | (fake >= high)).float().mean()
        energy, saturation = torch.stack([energy_real.detach().abs().mean(), saturation]).tolist()  # one sync
        where = f"at step {self.global_step} (epoch {self.current_epoch})"
        if not math.isfinite(energy) or energy > self.max_energy:
            raise DivergedError(f"the mean |energy| of real data is {energy:.4g} {where}, above model.max_energy="
                                f"{self.max_energy}: the energy diverged; lower optimizer.lr or model.step_size, "
                                f"or raise model.alpha (the penalty on energy magnitudes)")
        if saturation >= self.max_saturation:
            raise DivergedError(f"{saturation:.1%} of the Langevin samples' values are at the bounds of the data "
                                f"range {where} (model.max_saturation={self.max_saturation}): the chains diverged; "
                                f"lower model.step_size, model.grad_clip or optimizer.lr")

    # --- evaluation -----------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self.log_z = self.log_partition() if self.has_likelihood else None

    def on_test_epoch_start(self) -> None:
        self.on_validation_epoch_start()

    def on_validation_epoch_end(self) -> None:
        self.log_z = None  # the weights move on

    def on_test_epoch_end(self) -> None:
        self.log_z = None

    def to_unit_range(self, y: Tensor) -> Tensor:
        """Model space -> what pixel MMD compares: images in [0, 1], vectors as they are."""
        return (y + 1.0) / 2.0 if self.is_image else y

    def evaluate(self, batch, batch_idx: int, stage: str) -> None:
        real = self.to_model(batch[0])
        # The same noise for batch i every epoch, so the metrics move only with the weights.
        generator = torch.Generator().manual_seed(batch_idx)
        energy_real = self.energy(real).float()
        energy_noise = self.energy(uniform(len(real), *self.bounds, generator)).float()
        metrics = {"energy_real": energy_real.mean(), "energy_noise": energy_noise.mean(),
                   "energy_gap": energy_noise.mean() - energy_real.mean()}
        if self.has_likelihood:
            metrics["nll"] = (energy_real + self.log_z).mean()
            data_log_prob = getattr(self.trainer.datamodule, "log_prob", None)
            if data_log_prob is not None:
                # The best any model can do: the entropy of p_data, estimated on the same examples.
                oracle = -data_log_prob(batch[0]).mean()
                metrics |= {"oracle_nll": oracle, "nll_gap": metrics["nll"] - oracle}
        self.log_evaluation(stage, metrics, len(real))
        # Samples only until the metric holds eval_examples: validation draws the cheap preview chains,
        # testing the full ones.
        metric = self.pixel_mmd[stage]
        room = metric.room()
        if room > 0:
            n = min(room, len(real))
            draw = self.preview if stage == "val" else self.sample
            fake = self.to_model(draw(n, generator=generator))
            metric.update(self.to_unit_range(real[:n]), self.to_unit_range(fake))
        self.log(f"{stage}/pixel_mmd", metric, on_step=False, on_epoch=True, prog_bar=(stage == "val"))
