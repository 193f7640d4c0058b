"""Stop a run as soon as its training loss is NaN or infinite, instead of training on garbage."""

import lightning as L
import torch

from genexp.errors import DivergedError


def step_scalars(trainer: L.Trainer, pl_module: L.LightningModule, outputs) -> tuple[list[str], torch.Tensor]:
    """Names and values of this step's `train/` scalars (a genexp module's TrainLog, else what was
    `self.log`ged) and of the loss training_step returned."""
    train_log = getattr(pl_module, "train_log", None)
    if train_log is not None and train_log.values is not None:
        names, values = list(train_log.names), [train_log.values]
    else:
        logged = {k: v for k, v in trainer.callback_metrics.items()
                  if k.startswith("train/") and isinstance(v, torch.Tensor)}
        names, values = list(logged), [v.detach().float().reshape(1) for v in logged.values()]
    loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
    if isinstance(loss, torch.Tensor):
        names.append("the loss of training_step")
        values.append(loss.detach().float().reshape(1))
    return names, torch.cat(values) if values else torch.zeros(0)


class FiniteLoss(L.Callback):
    """Checks the loss a training step returns and every `train/` scalar of the step."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        names, values = step_scalars(trainer, pl_module, outputs)
        if values.isfinite().all():
            return  # one device sync per step
        name, value = next((n, v.item()) for n, v in zip(names, values) if not v.isfinite())
        raise DivergedError(f"{name} is {value} at step {trainer.global_step} (epoch {trainer.current_epoch}); "
                            f"lower optimizer.lr, set trainer.gradient_clip_val, or check the data's value range")
