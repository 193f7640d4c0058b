"""Generative adversarial networks (Goodfellow et al. 2014) with Lightning 2 manual optimisation.

One module, four objectives (D sees real x and generated x~ = G(z); r = D(x), f = D(x~)):
  non-saturating  D: BCE(r, 1) + BCE(f, 0)          G: BCE(f, 1)    (Goodfellow et al. 2014)
  hinge           D: relu(1 - r) + relu(1 + f)      G: -f           (Lim & Ye 2017)
  wasserstein-gp  D: f - r + lambda * GP            G: -f           (Gulrajani et al. 2017)
  least-squares   D: (r - 1)^2 / 2 + f^2 / 2        G: (f - 1)^2 / 2 (Mao et al. 2017)
Each training batch is one discriminator step; every `n_critic`-th batch is also one
generator step. The networks are chosen by config (`model.generator`, `model.discriminator`:
DCGAN convolutional nets for images, MLPs for vectors such as the 2D toy sets). Each network
has its own optimizer, built from the optimizer group with the changes in
`model.optimizers.<net>` (e.g. a faster discriminator, the two time-scale updates of Heusel et
al. 2017). An exponential moving average of the generator's weights (genexp.models.ema, Karras
et al. 2018) draws the samples when `ema_decay` is set.

No validation loss exists for a GAN: validation images are compared with as many samples
from fixed noise (and the images' labels) by the pixel MMD of genexp.metrics.pixel_mmd,
which is the default checkpoint monitor `val/pixel_mmd`.
"""

from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from genexp import lightning_compat
from genexp.errors import ConfigError
from genexp.metrics.pixel_mmd import PixelMMD
from genexp.models.base import GenerativeModule, build_net
from genexp.models.ema import EMA
from genexp.value_range import from_unit, to_unit

LOSSES = ("non-saturating", "hinge", "wasserstein-gp", "least-squares")
TARGET_LOSSES = ("non-saturating", "least-squares")
NETS = ("generator", "discriminator")
DEFAULT_GP_WEIGHT = 10.0  # lambda of Gulrajani et al. 2017, where model.gp_weight is not given  # in the order of their optimizers  # the losses with real/fake targets that label noise can soften


def discriminator_loss(loss: str, real: Tensor, fake: Tensor, real_target: Tensor, fake_target: Tensor) -> Tensor:
    """The discriminator's adversarial loss from its scores on real and generated images."""
    if loss == "non-saturating":
        return (F.binary_cross_entropy_with_logits(real, real_target)
                + F.binary_cross_entropy_with_logits(fake, fake_target))
    if loss == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    if loss == "wasserstein-gp":
        return fake.mean() - real.mean()
    return 0.5 * ((real - real_target) ** 2).mean() + 0.5 * ((fake - fake_target) ** 2).mean()


def generator_loss(loss: str, fake: Tensor) -> Tensor:
    """The generator's loss from the discriminator's scores on its images."""
    if loss == "non-saturating":
        return F.softplus(-fake).mean()  # = BCE(fake, 1)
    if loss == "least-squares":
        return 0.5 * ((fake - 1.0) ** 2).mean()
    return -fake.mean()


def gradient_penalty(critic, real: Tensor, fake: Tensor, labels: Tensor | None = None) -> Tensor:
    """E[(||grad_x^ D(x^)||_2 - 1)^2] at x^ = e x + (1 - e) x~, e ~ U[0, 1] per sample
    (Gulrajani et al. 2017). Computed in float32 even under mixed precision: in float16 the
    input gradient overflows under a loss scale, and bfloat16 is too coarse for its norm."""
    eps = torch.rand(len(real), *([1] * (real.dim() - 1)), device=real.device)
    mixed = (eps * real.float() + (1 - eps) * fake.float()).requires_grad_(True)
    with torch.autocast(real.device.type, enabled=False):
        (grad,) = torch.autograd.grad(critic(mixed, labels).sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()


class GAN(GenerativeModule):
    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"latent_dim": "int >= 1", "n_critic": "int >= 1", "gp_weight": "number >= 0",
                    "label_noise": "number in [0, 1)", "ema_decay": "number in [0, 1)", "eval_examples": "int >= 2",
                    "optimizers.*.lr": "number > 0", "optimizers.*.weight_decay": "number >= 0",
                    "optimizers.*.momentum": "number >= 0"}

    def __init__(
        self,
        shape: list[int],
        value_range: list[float] | None,
        generator: dict[str, Any],
        discriminator: dict[str, Any],
        latent_dim: int = 100,
        loss: str = "non-saturating",
        n_critic: int = 1,
        gp_weight: float | None = None,
        label_noise: float = 0.0,
        optimizers: dict[str, dict[str, Any]] | None = None,
        conditional: bool = False,
        num_classes: int | None = None,
        ema_decay: float | None = 0.999,
        eval_examples: int = 1000,
        **base,
    ) -> None:
        super().__init__(**base)
        self.shape = tuple(int(s) for s in shape)
        self.value_range = None if value_range is None else tuple(float(v) for v in value_range)
        if len(self.shape) == 3 and self.value_range not in ((0.0, 1.0), (-1.0, 1.0)):
            raise ConfigError(f"model.value_range={value_range} (from data.value_range) must be [-1, 1] (the "
                              f"generator's tanh range, as in Radford et al. 2016) or [0, 1]")
        if loss not in LOSSES:
            raise ConfigError(f"model.loss={loss!r} is not known; allowed: {', '.join(LOSSES)}")
        if loss == "wasserstein-gp" and discriminator.get("norm") == "batch":
            raise ConfigError("model.loss=wasserstein-gp penalises per-sample gradients, which batch norm mixes: "
                              "set model.discriminator.norm=layer or none")
        if gp_weight is not None and loss != "wasserstein-gp":
            raise ConfigError(f"model.gp_weight={gp_weight} weighs the gradient penalty of model.loss=wasserstein-gp "
                              f"only; model.loss={loss} has none")
        if label_noise and loss not in TARGET_LOSSES:
            raise ConfigError(f"model.label_noise={label_noise} softens targets; model.loss={loss} has none "
                              f"(allowed with: {', '.join(TARGET_LOSSES)})")
        optimizers = dict(optimizers or {})
        if set(optimizers) - set(NETS):
            raise ConfigError(f"model.optimizers has {sorted(set(optimizers) - set(NETS))}; allowed: {', '.join(NETS)}")
        if conditional and not num_classes:
            raise ConfigError("a class-conditional GAN (model.conditional=true) needs labelled data: data.num_classes "
                              "is null (for CelebA set data.label_attribute and data.num_classes=2)")
        self.save_hyperparameters()
        self.automatic_optimization = False

        self.latent_dim = latent_dim
        self.loss = loss
        self.n_critic = n_critic
        self.gp_weight = DEFAULT_GP_WEIGHT if gp_weight is None else gp_weight
        self.label_noise = label_noise
        # Per network: changes to the optimizer group's arguments (e.g. a faster discriminator's lr).
        self.net_optimizers = {name: dict(optimizers.get(name) or {}) for name in NETS}
        # What SampleGrid reads to draw one row per class.
        self.num_classes = int(num_classes) if conditional else None
        self.generator = build_net(generator, shape=self.shape, latent_dim=latent_dim, num_classes=self.num_classes)
        self.discriminator = build_net(discriminator, shape=self.shape, num_classes=self.num_classes)
        self.generator_ema = EMA(self.generator, ema_decay) if ema_decay is not None else None
        self.pixel_mmd = nn.ModuleDict({stage: PixelMMD(eval_examples) for stage in ("val", "test")})

    # --- protocol -------------------------------------------------------------------------
    def to_data_range(self, out: Tensor) -> Tensor:
        """An image generator's tanh output onto the data's value range; vectors stay as they are."""
        return out if self.value_range is None else from_unit((out + 1.0) / 2.0, self.value_range)

    def to_unit_range(self, x: Tensor) -> Tensor:
        return x if self.value_range is None else to_unit(x, self.value_range)

    def generate(self, z: Tensor, labels: Tensor | None, use_ema: bool = False) -> Tensor:
        net = self.generator_ema.module if use_ema and self.generator_ema is not None else self.generator
        return self.to_data_range(net(z, labels))

    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Samples of the EMA generator (if any); labels are used by class-conditional models only
        (drawn uniformly when not given)."""
        if self.num_classes is None:
            labels = None
        elif labels is None:
            labels = torch.randint(self.num_classes, (n,), generator=generator)
        z = self.noise(n, self.latent_dim, generator=generator)
        return self.generate(z, None if labels is None else labels.to(self.device), use_ema=True)

    # --- optimisation ---------------------------------------------------------------------
    def on_fit_start(self) -> None:
        wrapped = self.trainer.strategy.model
        if isinstance(wrapped, DistributedDataParallel) and not wrapped.find_unused_parameters:
            # The discriminator step leaves the generator out of the graph, and the other way round.
            raise ConfigError("a GAN under DDP needs unused-parameter detection: Lightning's strategy "
                              "ddp_find_unused_parameters_true (genexp's trainer=ddp chooses it for GANs)")

    def configure_optimizers(self):
        optimizers = [self.make_optimizer(getattr(self, name).parameters(), **changes)
                      for name, changes in self.net_optimizers.items()]
        if not self.lr_scheduler_cfg:
            return optimizers
        return optimizers, [instantiate(self.lr_scheduler_cfg["scheduler"], optimizer=o, _convert_="all")
                            for o in optimizers]

    def step_schedulers(self, interval: str) -> None:
        """Manual optimisation steps its schedulers itself, per epoch or per batch as configured."""
        if self.lr_scheduler_cfg and self.lr_scheduler_cfg.get("interval", "epoch") == interval:
            for scheduler in self.lr_schedulers():
                scheduler.step()

    def grad_norm(self, name: str, module: nn.Module) -> dict[str, Tensor]:
        """{name: total gradient norm} after a step, on the steps whose values reach the loggers
        (a pass over every gradient costs a few percent of a step). Under float16 mixed precision
        the loss scaler skips steps whose gradients overflowed (and lowers the scale): those are
        not logged, as they are part of loss scaling, not a divergence."""
        if not self.logs_this_step():
            return {}
        norm = torch.nn.utils.get_total_norm([p.grad for p in module.parameters() if p.grad is not None])
        scaled = getattr(self.trainer.precision_plugin, "scaler", None) is not None
        return {} if scaled and not torch.isfinite(norm) else {name: norm}

    def latents(self, n: int) -> Tensor:
        return torch.randn(n, self.latent_dim, device=self.device)

    def targets(self, scores: Tensor, real: bool) -> Tensor:
        """1 for real and 0 for fake, softened by up to `label_noise` towards the other side."""
        noise = self.label_noise * torch.rand_like(scores) if self.label_noise else torch.zeros_like(scores)
        return 1.0 - noise if real else noise

    def score_mean(self, scores: Tensor) -> Tensor:
        """Mean D output: the probability of 'real' for the non-saturating loss, else the raw score."""
        return (torch.sigmoid(scores) if self.loss == "non-saturating" else scores).mean().detach()

    def discriminator_step(self, real: Tensor, labels: Tensor | None, optimizer) -> dict[str, Tensor]:
        with lightning_compat.toggled_optimizer(self, optimizer):
            with torch.no_grad():
                fake = self.generate(self.latents(len(real)), labels)
            real_out = self.discriminator(real, labels).float()
            fake_out = self.discriminator(fake, labels).float()
            loss = discriminator_loss(self.loss, real_out, fake_out, self.targets(real_out, True),
                                      self.targets(fake_out, False))
            terms = {"d_real": self.score_mean(real_out), "d_fake": self.score_mean(fake_out)}
            if self.loss == "wasserstein-gp":
                terms["wasserstein"] = (real_out.mean() - fake_out.mean()).detach()
                penalty = gradient_penalty(self.discriminator, real, fake, labels)
                terms["gp"] = penalty.detach()
                loss = loss + self.gp_weight * penalty
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
        return {"d_loss": loss.detach(), **terms, **self.grad_norm("d_grad_norm", self.discriminator)}

    def generator_step(self, n: int, labels: Tensor | None, optimizer) -> dict[str, Tensor]:
        with lightning_compat.toggled_optimizer(self, optimizer):
            fake_out = self.discriminator(self.generate(self.latents(n), labels), labels).float()
            loss = generator_loss(self.loss, fake_out)
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
        if self.generator_ema is not None:
            self.generator_ema.update(self.generator)
        return {"g_loss": loss.detach(), **self.grad_norm("g_grad_norm", self.generator)}

    def training_step(self, batch, batch_idx: int) -> None:
        real, labels = batch
        labels = labels if self.num_classes else None
        opt_g, opt_d = self.optimizers()
        terms = self.discriminator_step(real, labels, opt_d)
        # Counted across epochs (and restored on resume), so short epochs still reach a generator step.
        if (lightning_compat.total_batch_idx(self.trainer) + 1) % self.n_critic == 0:
            terms |= self.generator_step(len(real), labels, opt_g)
        self.log_train({f"train/{k}": v for k, v in terms.items()}, len(real))
        self.step_schedulers("step")

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.step_schedulers("epoch")

    # --- evaluation -----------------------------------------------------------------------
    def evaluate(self, batch, batch_idx: int, stage: str) -> None:
        real, labels = batch
        labels = labels if self.num_classes else None
        # The same noise for batch i every epoch, so the metric moves only with the weights.
        fake = self.sample(len(real), labels, generator=torch.Generator().manual_seed(batch_idx))
        self.log_evaluation(stage, {"d_real": self.score_mean(self.discriminator(real, labels).float()),
                                    "d_fake": self.score_mean(self.discriminator(fake, labels).float())}, len(real))
        metric = self.pixel_mmd[stage]
        metric.update(self.to_unit_range(real), self.to_unit_range(fake))
        self.log(f"{stage}/pixel_mmd", metric, on_step=False, on_epoch=True, prog_bar=(stage == "val"))
