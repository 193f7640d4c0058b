"""What every generative module shares: optimizers built from config, and the sampling protocol.

The protocol that callbacks and metrics are written against:
  sample(n, labels=None, generator=None) -> data-space samples (always)
  encode(x), decode(z), reconstruct(x), log_prob(x)  (where the model can)
Only plain config values are stored as hyperparameters, so checkpoints load with
torch.load(weights_only=True) and modules are rebuilt from the config.
"""

from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from torch import Tensor

from genexp.models.train_log import TrainLog


class GenerativeModule(L.LightningModule):
    def __init__(self, optimizer: dict[str, Any], scheduler: dict[str, Any] | None = None,
                 monitor: str = "val/loss", monitor_mode: str = "min") -> None:
        super().__init__()
        self.optimizer_cfg = dict(optimizer)
        self.scheduler_cfg = dict(scheduler or {})
        # The metric this objective is judged by: checkpoints and sweeps read it from here.
        self.monitor = monitor
        self.monitor_mode = monitor_mode
        self.train_log = TrainLog()

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning records the running hook's name here around every hook call (tens of times per
        # step); nn.Module's checks for parameters and submodules would cost more than the hook.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def make_optimizer(self, params, **overrides: Any) -> torch.optim.Optimizer:
        cfg = {k: v for k, v in self.optimizer_cfg.items() if k != "name"} | overrides
        return instantiate(cfg, params=params, _convert_="all")

    def configure_optimizers(self):
        optimizer = self.make_optimizer(self.parameters())
        if not self.scheduler_cfg:
            return optimizer
        scheduler = instantiate(self.scheduler_cfg["scheduler"], optimizer=optimizer, _convert_="all")
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_cfg.get("interval", "epoch")}}

    def logs_this_step(self) -> bool:
        """Whether Lightning writes step metrics to the loggers after this training step."""
        return self.trainer._logger_connector.should_update_logs or bool(self.trainer.fast_dev_run)

    def log_train(self, scalars: dict[str, Tensor], batch_size: int) -> None:
        """This training step's scalars (names under train/): see genexp.models.train_log."""
        self.train_log.add(scalars, batch_size)
        if self.logs_this_step() and self.loggers:
            # Straight to the loggers, as Lightning writes its own step metrics (with the epoch, at its
            # step count), but without `self.log`, which costs more than the write, and without a flush
            # per write: the loggers flush at the end of each epoch.
            values = self.train_log.values.tolist()  # one host sync
            metrics = {f"{name}_step": value for name, value in zip(self.train_log.names, values)}
            step = self.trainer.fit_loop.epoch_loop._batches_that_stepped
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

    def sample(self, n: int, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def noise(self, *shape: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard normal noise drawn on the CPU (so a seeded generator gives the same codes
        on any device) and moved to the module's device."""
        return torch.randn(*shape, generator=generator).to(self.device)
