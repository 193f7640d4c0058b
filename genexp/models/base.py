"""What every generative module shares: optimizers built from config, and the sampling protocol.

The protocol that callbacks and metrics are written against:
  sample(n, labels=None, generator=None) -> data-space samples (always)
  preview(n, labels=None, generator=None) -> data-space samples drawn cheaply: what callbacks show
    while training (every epoch or every N); sample() by default. A model whose sampler is costly
    (diffusion: a network call per step; Langevin chains) overrides it with a cheaper one (few DDIM
    steps, a short chain). Final grids after training and evaluation (genexp.evaluate,
    genexp.metrics) always call sample().
  encode(x), decode(z), reconstruct(x), log_prob(x)  (where the model can)
Only plain config values are stored as hyperparameters, so checkpoints load with
torch.load(weights_only=True) and modules are rebuilt from the config.
"""

from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from torch import Tensor

from genexp import lightning_compat
from genexp.errors import find_user_error
from genexp.models.train_log import TrainLog


def build_net(config: dict[str, Any], **sizes: Any) -> torch.nn.Module:
    """A network from its config node (`_target_` and settings) and the sizes the model knows (the
    data's shape, the latent size, the classes); a net that refuses them raises its own
    GenexpError, not Hydra's wrapper of it."""
    try:
        return instantiate(config, **sizes, _convert_="all")
    except InstantiationException as error:
        raise find_user_error(error) or error from None


class GenerativeModule(L.LightningModule):
    # The classes a conditional model generates (labels 0..num_classes-1); None: unconditional.
    num_classes: int | None = None
    def __init__(self, optimizer: dict[str, Any], lr_scheduler: dict[str, Any] | None = None,
                 monitor: str = "val/loss", monitor_mode: str = "min") -> None:
        super().__init__()
        self.optimizer_cfg = dict(optimizer)
        self.lr_scheduler_cfg = dict(lr_scheduler or {})
        # The metric this objective is judged by: checkpoints and sweeps read it from here.
        self.monitor = monitor
        self.monitor_mode = monitor_mode
        self.train_log = TrainLog()

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning records the running hook's name around every hook call (tens of times per step);
        # nn.Module's checks for parameters and submodules would cost more than the hook.
        if name == lightning_compat.HOOK_NAME_ATTR:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def make_optimizer(self, params, **overrides: Any) -> torch.optim.Optimizer:
        cfg = {k: v for k, v in self.optimizer_cfg.items() if k != "name"} | overrides
        return instantiate(cfg, params=params, _convert_="all")

    def configure_optimizers(self):
        optimizer = self.make_optimizer(self.parameters())
        if not self.lr_scheduler_cfg:
            return optimizer
        scheduler = instantiate(self.lr_scheduler_cfg["scheduler"], optimizer=optimizer, _convert_="all")
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": self.lr_scheduler_cfg.get("interval", "epoch")}}

    def logs_this_step(self) -> bool:
        """Whether Lightning writes step metrics to the loggers after this training step."""
        return lightning_compat.logs_this_step(self.trainer) or bool(self.trainer.fast_dev_run)

    def log_train(self, scalars: dict[str, Tensor], batch_size: int) -> None:
        """This training step's scalars (names under train/): see genexp.models.train_log."""
        self.train_log.add(scalars, batch_size)
        if self.logs_this_step() and self.loggers:
            # Straight to the loggers, as Lightning writes its own step metrics (with the epoch, at its
            # step count), but without `self.log`, which costs more than the write, and without a flush
            # per write: the loggers flush at the end of each epoch.
            values = self.train_log.values.tolist()  # one host sync
            metrics = {f"{name}_step": value for name, value in zip(self.train_log.names, values)}
            step = lightning_compat.batches_that_stepped(self.trainer)
            for logger in self.loggers:
                logger.log_metrics(metrics | {"epoch": self.current_epoch}, step=step)

    def on_train_epoch_end(self) -> None:
        # The learning rate of the epoch (before epoch schedulers step), once per epoch.
        lrs = {f"lr{'' if i == 0 else f'_{i}'}": optimizer.param_groups[0]["lr"]
               for i, optimizer in enumerate(self.trainer.optimizers)}
        self.log_dict(lrs, on_step=False, on_epoch=True, sync_dist=True)  # the same on every rank
        # Averaged over the ranks too (each rank saw its own shard of the epoch).
        means = self.train_log.epoch_means()
        if means:
            self.log_dict(means, on_step=False, on_epoch=True, logger=False, sync_dist=True)
            self.log_dict({f"{k}_epoch": v for k, v in means.items()}, on_step=False, on_epoch=True, sync_dist=True)

    # --- evaluation: the same steps for every family ------------------------------------
    def validation_step(self, batch, batch_idx: int) -> None:
        self.evaluate(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self.evaluate(batch, batch_idx, "test")

    def evaluate(self, batch, batch_idx: int, stage: str) -> None:
        """Log this family's metrics of one batch of a split (`stage`: val or test) with log_evaluation."""
        raise NotImplementedError

    def log_evaluation(self, stage: str, metrics: dict[str, Tensor], batch_size: int) -> None:
        """{stage}/<name> per batch, averaged over the epoch; under DDP each rank sees a shard of the
        split, and the epoch's value is the mean over all ranks (sync_dist)."""
        self.log_dict({f"{stage}/{name}": value for name, value in metrics.items()}, batch_size=batch_size,
                      prog_bar=(stage == "val"), sync_dist=True)

    def spread_labels(self, n: int) -> Tensor | None:
        """Labels for n samples of a conditional model, every class equally often; None otherwise."""
        return torch.arange(n) % self.num_classes if self.num_classes else None

    def sample(self, n: int, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def preview(self, n: int, labels: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Samples for the views drawn while training: `sample` unless a model has a cheaper sampler."""
        return self.sample(n, labels, generator)

    def noise(self, *shape: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard normal noise drawn on the CPU (so a seeded generator gives the same codes
        on any device) and moved to the module's device."""
        return torch.randn(*shape, generator=generator).to(self.device)
