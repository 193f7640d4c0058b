"""Denoising diffusion (Ho et al. 2020): a network learns to undo a gradual noising of the data,
and samples are drawn by undoing it step by step from pure noise.

Training: take data x (images mapped to [-1, 1]), a time t and noise eps, form
x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps (genexp.models.noise_schedule), and regress the
network's output on its target (eps, x0 or v, `prediction`) by MSE or MAE (the book's), optionally
weighted by min-SNR-gamma (Hang et al. 2023), which keeps the easy low-noise steps from dominating.
Sampling: genexp.models.diffusion_sampling (ancestral DDPM, DDIM with eta and any number of steps).
Likelihood: genexp.models.diffusion_bound (the variational bound, in bits/dim on images).

Class conditioning (`conditional`) feeds the data's labels to the denoiser, replaced by the
"no label" class with probability `label_dropout` during training, so one network also learns
the unconditional model; sampling with classifier-free guidance (Ho & Salimans 2022) mixes the two,
out = out_uncond + guidance_scale * (out_cond - out_uncond) (1 = the conditional model alone).

An EMA of the denoiser's weights (genexp.models.ema) draws samples and evaluation. Validation
logs the loss over a fixed set of times in `loss_buckets` bands of t (val/loss_by_t/...), and a
sample MMD from the cheap preview sampler; testing adds the bound and the full sampler's MMD.
"""

import math
from typing import Any

import torch
from torch import Tensor, nn

from genexp import lightning_compat
from genexp.errors import ConfigError
from genexp.metrics.pixel_mmd import PixelMMD
from genexp.models.base import GenerativeModule, build_net
from genexp.models.diffusion_bound import variational_bound
from genexp.models.diffusion_sampling import SAMPLERS, reverse_diffusion
from genexp.models.ema import EMA
from genexp.models.noise_schedule import PREDICTIONS
from genexp.value_range import from_unit, to_unit

LOSSES = ("mse", "mae")
SAMPLER_KEYS = {"name", "steps", "eta"}
PROGRESS_MIN_STEPS = 100  # sampling this long shows a progress bar (outside training)


class Diffusion(GenerativeModule):
    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"min_snr_gamma": "number > 0", "label_dropout": "number in [0, 1)", "guidance_scale": "number >= 0",
                    "ema_decay": "number in [0, 1)", "preview_steps": "int >= 1", "bound_samples": "int >= 1",
                    "loss_buckets": "int >= 1", "eval_examples": "int >= 2", "val_examples": "int >= 2", "sampler.steps": "int >= 1",
                    "sampler.eta": "number >= 0", "clip_denoised": "bool", "conditional": "bool"}

    def __init__(self, shape: list[int], value_range: list[float] | None, denoiser: dict[str, Any],
                 schedule: dict[str, Any], prediction: str = "eps", loss: str = "mse", min_snr_gamma: float | None = None,
                 sampler: dict[str, Any] | None = None, preview_steps: int = 10, clip_denoised: bool = True,
                 conditional: bool = False, num_classes: int | None = None, label_dropout: float = 0.0,
                 guidance_scale: float = 1.0, ema_decay: float | None = 0.999, bound_samples: int = 16,
                 loss_buckets: int = 4, eval_examples: int = 1000, val_examples: int = 128, **base) -> None:
        super().__init__(**base)
        self.shape = tuple(int(s) for s in shape)
        self.is_image = len(self.shape) == 3
        self.value_range = None if value_range is None else tuple(float(v) for v in value_range)
        if self.is_image and self.value_range is None:
            raise ConfigError("model=ddpm needs data.value_range for images (e.g. [0.0, 1.0])")
        if prediction not in PREDICTIONS:
            raise ConfigError(f"model.prediction={prediction!r} is not known; allowed: {', '.join(PREDICTIONS)}")
        if loss not in LOSSES:
            raise ConfigError(f"model.loss={loss!r} is not known; allowed: {', '.join(LOSSES)}")
        sampler = {"name": "ddim", "steps": 50, "eta": 0.0} | dict(sampler or {})
        if set(sampler) - SAMPLER_KEYS:
            raise ConfigError(f"model.sampler has {sorted(set(sampler) - SAMPLER_KEYS)}; allowed: "
                              f"{', '.join(sorted(SAMPLER_KEYS))}")
        if sampler["name"] not in SAMPLERS:
            raise ConfigError(f"model.sampler.name={sampler['name']!r} is not known; allowed: {', '.join(SAMPLERS)}")
        if sampler["name"] == "ddpm" and sampler["eta"] != 0.0:
            raise ConfigError(f"model.sampler.eta={sampler['eta']} sets DDIM's noise; model.sampler.name=ddpm has "
                              f"the posterior's own (as DDIM with eta=1): set model.sampler.name=ddim or drop eta")
        if clip_denoised and not self.is_image:
            raise ConfigError(f"model.clip_denoised=true clips x0^ to the value range of images, and data.shape="
                              f"{list(self.shape)} is vectors: for 2D points use model=ddpm_2d (an MLP denoiser, "
                              f"no clipping), or set model.clip_denoised=false and model/denoiser=mlp")
        if conditional and not num_classes:
            raise ConfigError("a class-conditional diffusion model (model.conditional=true) needs labelled data: "
                              "data.num_classes is null")
        if not conditional and (label_dropout or guidance_scale != 1.0):
            raise ConfigError(f"model.label_dropout={label_dropout} and model.guidance_scale={guidance_scale} act on "
                              f"class-conditional models only (model.conditional=true); here they must be 0 and 1")
        self.save_hyperparameters()
        self.prediction, self.loss_kind, self.min_snr_gamma = prediction, loss, min_snr_gamma
        self.sampler = sampler  # name, steps, eta
        self.preview_steps, self.clip_denoised = preview_steps, clip_denoised
        self.num_classes = int(num_classes) if conditional else None
        self.label_dropout, self.guidance_scale = label_dropout, guidance_scale
        self.bound_samples, self.loss_buckets = bound_samples, loss_buckets
        self.schedule = build_net(schedule)
        # The sampler's steps must fit the schedule: refused now, not after training.
        self.schedule.sampling_times(sampler["steps"])
        self.schedule.sampling_times(preview_steps, "model.preview_steps")
        self.denoiser = build_net(denoiser, shape=self.shape, num_classes=self.num_classes)
        self.denoiser_ema = EMA(self.denoiser, ema_decay) if ema_decay is not None else None
        # Validation's samples come from the preview sampler every epoch: fewer of them keep the
        # epoch's time for training (val_examples), the test compares eval_examples.
        self.sample_mmd = nn.ModuleDict({"val": PixelMMD(val_examples), "test": PixelMMD(eval_examples)})

    # --- data space <-> the space the model diffuses in ------------------------------------
    def to_model_space(self, x: Tensor) -> Tensor:
        """Images -> [-1, 1], the range the noise is scaled to (Ho et al. 2020); vectors as they are."""
        return to_unit(x, self.value_range) * 2 - 1 if self.is_image else x

    def to_data_space(self, y: Tensor) -> Tensor:
        return from_unit((y.clamp(-1, 1) + 1) / 2, self.value_range) if self.is_image else y

    # --- the network's predictions ----------------------------------------------------------
    def null_labels(self, n: int) -> Tensor | None:
        """The "no label" class of every example (conditional models), or None."""
        return None if self.num_classes is None else torch.full((n,), self.num_classes, device=self.device)

    def net_output(self, net: nn.Module, x_t: Tensor, t: Tensor, labels: Tensor | None, guidance: float = 1.0) -> Tensor:
        """The denoiser's output, with classifier-free guidance when guidance != 1 (one batched call)."""
        if labels is None or guidance == 1.0:
            return net(x_t, t, labels)
        both = net(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([labels, self.null_labels(len(labels))]))
        conditional, unconditional = both.chunk(2)
        return unconditional + guidance * (conditional - unconditional)

    def predictor(self, labels: Tensor | None, guidance: float = 1.0, clip: bool = False, use_ema: bool = True):
        """(x_t, t) -> (x0^, eps^) of the (EMA) denoiser; x0^ clipped to [-1, 1] on images if `clip`."""
        net = self.denoiser_ema.module if use_ema and self.denoiser_ema is not None else self.denoiser

        def predict(x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
            t = t.to(x_t.device)
            x0, eps = self.schedule.to_x0_eps(self.net_output(net, x_t, t, labels, guidance), x_t, t, self.prediction)
            return (x0.clamp(-1, 1) if clip and self.is_image else x0), eps

        return predict

    # --- protocol -------------------------------------------------------------------------
    def draw(self, n: int, labels: Tensor | None, generator: torch.Generator | None, preview: bool,
             n_frames: int = 0) -> tuple[Tensor, list[Tensor]]:
        """Samples and `n_frames` states along the way (data space), from the configured sampler, or
        from deterministic DDIM with `preview_steps` steps if `preview`."""
        settings = {"name": "ddim", "steps": self.preview_steps, "eta": 0.0} if preview else self.sampler
        if self.num_classes is None:
            labels = None
        elif labels is None:
            labels = torch.randint(self.num_classes, (n,), generator=generator)
        predict = self.predictor(None if labels is None else labels.to(self.device), self.guidance_scale,
                                 clip=self.clip_denoised)
        x = self.noise(n, *self.shape, generator=generator)
        # A bar for long sampling outside training (genexp.sample, genexp.evaluate), where no
        # progress bar of Lightning's is on screen.
        show_progress = settings["steps"] >= PROGRESS_MIN_STEPS and lightning_compat.attached_trainer(self) is None
        x, frames = reverse_diffusion(self.schedule, predict, x, settings["steps"], settings["name"], settings["eta"],
                                      generator, n_frames, show_progress)
        return self.to_data_space(x), [self.to_data_space(frame) for frame in frames]

    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Samples from the configured sampler (model.sampler); labels for conditional models only
        (drawn uniformly when not given)."""
        return self.draw(n, labels, generator, preview=False)[0]

    def preview(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Deterministic DDIM with `preview_steps` steps: from the same noise, epochs compare image for image."""
        return self.draw(n, labels, generator, preview=True)[0]

    def sampling_chain(self, n: int, n_frames: int, generator: torch.Generator | None = None,
                       preview: bool = False) -> Tensor:
        """(n_frames, n, *shape): the states from noise (first) to samples (last), in data space."""
        return torch.stack(self.draw(n, None, generator, preview, n_frames)[1])

    # --- training -------------------------------------------------------------------------
    def loss_terms(self, x: Tensor, labels: Tensor | None, t: Tensor, noise: Tensor, net: nn.Module) -> Tensor:
        """The per-example loss of predicting the target of x_t at times t."""
        x_t = self.schedule.add_noise(x, noise, t)
        target = self.schedule.target(x, noise, t, self.prediction)
        error = self.net_output(net, x_t, t, labels) - target
        per_example = (error.abs() if self.loss_kind == "mae" else error.pow(2)).flatten(1).mean(1)
        if self.min_snr_gamma is None:
            return per_example
        # min(SNR, gamma) on the x0 error, expressed for the target predicted (Hang et al. 2023, eq. 8).
        snr = self.schedule.snr(t)
        weight = snr.clamp(max=self.min_snr_gamma) / {"eps": snr, "x0": torch.ones_like(snr), "v": snr + 1}[self.prediction]
        return weight.to(per_example) * per_example

    def training_labels(self, labels: Tensor) -> Tensor | None:
        if self.num_classes is None:
            return None
        dropped = torch.rand(len(labels), device=labels.device) < self.label_dropout
        return torch.where(dropped, self.num_classes, labels)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x, labels = self.to_model_space(batch[0]), batch[1]
        t = self.schedule.training_times(len(x)).to(x.device)
        loss = self.loss_terms(x, self.training_labels(labels), t, torch.randn_like(x), self.denoiser).mean()
        self.log_train({"train/loss": loss}, len(x))
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.denoiser_ema is not None:
            self.denoiser_ema.update(self.denoiser)

    # --- evaluation -----------------------------------------------------------------------
    def bucket_times(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """A time per example, example i in band b = i mod B of B = loss_buckets bands of t
        ((b / B, (b + 1) / B]), and the band of each: every band is scored at the cost of one call."""
        band = torch.arange(n) % self.loss_buckets
        t = (band + torch.rand(n, generator=generator)) / self.loss_buckets
        if not self.schedule.continuous:  # whole steps, 1..T
            t = (t * self.schedule.steps).ceil().clamp(1, self.schedule.steps) / self.schedule.steps
        return t, band

    def evaluate(self, batch, batch_idx: int, stage: str) -> None:
        data, labels = batch
        x = self.to_model_space(data)
        labels = labels if self.num_classes is not None else None
        net = self.denoiser_ema.module if self.denoiser_ema is not None else self.denoiser
        # The same times and noise for batch i every epoch, so the metrics move only with the weights.
        generator = torch.Generator().manual_seed(batch_idx)
        t, band = self.bucket_times(len(x), generator)
        noise = torch.randn(x.shape, generator=generator).to(x)
        losses = self.loss_terms(x, labels, t.to(x.device), noise, net)
        metrics = {"loss": losses.mean()}
        for b in band.unique().tolist():
            name = f"loss_by_t/{b / self.loss_buckets:.2f}-{(b + 1) / self.loss_buckets:.2f}"
            # Averaged over the epoch by Lightning with the batch's size as weight: close to the band's
            # mean, as the bands are equally represented in every batch.
            metrics[name] = losses[band.to(losses.device) == b].mean()
        if stage == "test":
            metrics |= self.bound_metrics(x, labels, generator)
        self.log_evaluation(stage, metrics, len(x))
        mmd = self.sample_mmd[stage]
        n = min(mmd.room(), len(x))
        if n > 0:  # samples cost a network call per step: no more than the metric keeps
            draw = self.preview if stage == "val" else self.sample
            fake = draw(n, None if labels is None else labels[:n], generator=torch.Generator().manual_seed(batch_idx))
            mmd.update(self.mmd_space(data[:n]), self.mmd_space(fake))
        self.log(f"{stage}/sample_mmd", mmd, on_step=False, on_epoch=True)

    def mmd_space(self, x: Tensor) -> Tensor:
        return to_unit(x, self.value_range) if self.is_image else x

    def bound_metrics(self, x: Tensor, labels: Tensor | None, generator: torch.Generator) -> dict[str, Tensor]:
        """The variational bound on -log p(x): nats per example; bits/dim on images; the gap to the
        data's entropy where the data module knows its density (2D sets). A conditional model trained
        with label dropout is scored as the unconditional model p(x) (the "no label" class)."""
        if labels is not None and self.label_dropout > 0:
            labels = self.null_labels(len(labels))
        terms = self.variational_bound(x, labels, generator)
        metrics = {name if name == "nll_bound" else f"bound_{name}": value.mean() for name, value in terms.items()}
        if self.is_image:
            metrics["bits_per_dim_bound"] = metrics["nll_bound"] / (math.prod(self.shape) * math.log(2))
        data_log_prob = getattr(self.trainer.datamodule, "log_prob", None)
        if data_log_prob is not None:
            oracle = -data_log_prob(x).mean()
            metrics |= {"oracle_nll": oracle, "nll_bound_gap": metrics["nll_bound"] - oracle}
        return metrics

    def variational_bound(self, x: Tensor, labels: Tensor | None = None,
                          generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Per example (nats): the bound on -log p(x) of data in model space, and its terms."""
        return variational_bound(self.schedule, self.predictor(labels), x, discrete=self.is_image,
                                 samples=self.bound_samples, generator=generator)
