"""What the latent-space views share: when they are drawn, on which examples, how codes are read.

A view applies to any model that offers `encode(x)` and `decode(z)` (the protocol of
genexp.models.base), whatever its family; others are skipped. Conditional models (those with a
`num_classes`) are given the labels of their inputs. A view is drawn once after testing, on the
test split with the tested checkpoint, and, when `every_n_epochs` is set, on the validation
split during training. Codes are handled flat, (N, D), and given back to `decode` in the shape
`encode` returned them.
"""

from typing import Any

import lightning as L
import torch
from torch import Tensor

from genexp.images import evaluating

ENCODE_BATCH = 256  # examples per encoder pass when a view reads many codes


def label_kwargs(model: L.LightningModule, labels: Tensor) -> dict[str, Any]:
    """`labels=` for conditional models, nothing for the others."""
    return {"labels": labels} if model.num_classes else {}


class Codes:
    """Examples of a split with their labels and flat latent codes, on the model's device."""

    def __init__(self, model: L.LightningModule, datamodule: L.LightningDataModule, split: str, n: int) -> None:
        x, labels = datamodule.example_batch(split, n)
        self.model = model
        self.x = x.to(model.device)
        self.labels = labels.to(model.device)
        chunks = [model.encode(self.x[i:i + ENCODE_BATCH], **label_kwargs(model, self.labels[i:i + ENCODE_BATCH]))
                  for i in range(0, len(self.x), ENCODE_BATCH)]
        self.code_shape = chunks[0].shape[1:]
        self.z = torch.cat(chunks).flatten(1)

    def decode(self, z: Tensor, labels: Tensor) -> Tensor:
        """Flat codes (N, D) back to data space, conditioned on `labels` where the model needs them."""
        return self.model.decode(z.view(-1, *self.code_shape), **label_kwargs(self.model, labels))


class LatentView(L.Callback):
    """Subclasses set `tag` (the folder and TensorBoard tag) and implement `draw`."""

    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"every_n_epochs": "int >= 1"}

    tag = "latent"
    needs_images = True  # False for views that need only the codes

    def __init__(self, every_n_epochs: int | None = None) -> None:
        self.every_n_epochs = every_n_epochs

    def applies(self, trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
        datamodule = getattr(trainer, "datamodule", None)
        return (trainer.is_global_zero and hasattr(pl_module, "encode") and hasattr(pl_module, "decode")
                and hasattr(datamodule, "example_batch")
                and (hasattr(datamodule, "to_images") or not self.needs_images))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.every_n_epochs or trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        if self.applies(trainer, pl_module):
            with evaluating(pl_module):
                self.draw(trainer, pl_module, "val", f"epoch_{trainer.current_epoch:04d}")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.applies(trainer, pl_module):
            with evaluating(pl_module):
                self.draw(trainer, pl_module, "test", "test")

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, split: str, name: str) -> None:
        """Write the view of `split` under <run dir>/<tag>/<name>..."""
        raise NotImplementedError
