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


class GenerativeModule(L.LightningModule):
    def __init__(self, optimizer: dict[str, Any], scheduler: dict[str, Any] | None = None,
                 monitor: str = "val/loss", monitor_mode: str = "min") -> None:
        super().__init__()
        self.optimizer_cfg = dict(optimizer)
        self.scheduler_cfg = dict(scheduler or {})
        # The metric this objective is judged by: checkpoints and sweeps read it from here.
        self.monitor = monitor
        self.monitor_mode = monitor_mode

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

    def on_train_epoch_start(self) -> None:
        for i, optimizer in enumerate(self.trainer.optimizers):
            suffix = "" if i == 0 else f"_{i}"
            self.log(f"lr{suffix}", optimizer.param_groups[0]["lr"], on_step=False, on_epoch=True)

    def sample(self, n: int, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def noise(self, *shape: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard normal noise drawn on the CPU (so a seeded generator gives the same codes
        on any device) and moved to the module's device."""
        return torch.randn(*shape, generator=generator).to(self.device)
