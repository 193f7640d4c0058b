"""Stop a run as soon as its training loss is NaN or infinite, instead of training on garbage."""

import lightning as L
import torch

from genexp.errors import DivergedError


class FiniteLoss(L.Callback):
    """Checks the loss a training step returns and every `train/` value logged for the step."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        values = {k: v for k, v in trainer.callback_metrics.items()
                  if k.startswith("train/") and isinstance(v, torch.Tensor)}
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            values["the loss of training_step"] = loss
        if not values or torch.stack([v.detach().float().reshape(()) for v in values.values()]).isfinite().all():
            return  # one device sync per step
        name, value = next((k, v.item()) for k, v in values.items() if not v.isfinite().all())
        raise DivergedError(f"{name} is {value} at step {trainer.global_step} (epoch {trainer.current_epoch}); "
                            f"lower optimizer.lr, set trainer.gradient_clip_val, or check the data's value range")
