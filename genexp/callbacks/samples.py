"""Sample grids from fixed noise each epoch, so that epochs can be compared image for image.

The grids of training epochs are drawn with the model's `preview` (its cheap sampler, see
genexp.models.base); final.png after training and eval.png (genexp.evaluate) with its full `sample`.
"""

import math

import lightning as L
import torch

from genexp.images import evaluating, image_grid, publish_grid


class SampleGrid(L.Callback):
    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"n_samples": "int >= 1", "every_n_epochs": "int >= 1", "seed": "int >= 0"}

    def __init__(self, n_samples: int = 64, every_n_epochs: int = 1, seed: int = 1234) -> None:
        self.n_samples = n_samples
        self.every_n_epochs = every_n_epochs
        self.seed = seed

    def _labels(self, pl_module: L.LightningModule) -> torch.Tensor | None:
        num_classes = getattr(pl_module, "num_classes", None)
        if not num_classes:
            return None
        # One row per class for conditional models.
        per_class = max(1, self.n_samples // num_classes)
        return torch.arange(num_classes, device=pl_module.device).repeat_interleave(per_class)

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, file_name: str,
              tensorboard: bool = True, preview: bool = False) -> None:
        """The grid as <run dir>/samples/<file_name>: from `pl_module.preview` if `preview`, else `sample`."""
        labels = self._labels(pl_module)
        n = self.n_samples if labels is None else len(labels)
        draw = pl_module.preview if preview else pl_module.sample
        with evaluating(pl_module):
            # The same seed every time: the same noise, so grids of different epochs line up.
            samples = draw(n, labels=labels, generator=torch.Generator().manual_seed(self.seed))
        nrow = n // pl_module.num_classes if labels is not None else math.ceil(math.sqrt(n))
        images = trainer.datamodule.to_images(samples)
        publish_grid(trainer, "samples", image_grid(images, nrow), file_name, tensorboard)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or not _shows_images(trainer):
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.write(trainer, pl_module, f"epoch_{trainer.current_epoch:04d}.png", preview=True)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and _shows_images(trainer):
            # The weights after the last epoch, from the full sampler; TensorBoard has that epoch's preview.
            self.write(trainer, pl_module, "final.png", tensorboard=False)


def _shows_images(trainer: L.Trainer) -> bool:
    """Image grids need image data; vector data (2D points) has views of its own."""
    return hasattr(trainer.datamodule, "to_images")
