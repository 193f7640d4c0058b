"""Inputs above their reconstructions, for models that offer `reconstruct(x)`."""

import lightning as L
import torch

from genexp.images import image_grid, publish_grid
from genexp.images import evaluating
from genexp.callbacks.latent import label_kwargs


class Reconstructions(L.Callback):
    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"n_samples": "int >= 1", "every_n_epochs": "int >= 1"}

    def __init__(self, n_samples: int = 16, every_n_epochs: int = 1) -> None:
        self.n_samples = n_samples
        self.every_n_epochs = every_n_epochs

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or not hasattr(pl_module, "reconstruct") \
                or not hasattr(trainer.datamodule, "example_batch") or not hasattr(trainer.datamodule, "to_images"):
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        # The first validation images: the same inputs every epoch.
        x, labels = (t.to(pl_module.device) for t in trainer.datamodule.example_batch("val", self.n_samples))
        with evaluating(pl_module):
            recon = pl_module.reconstruct(x, **label_kwargs(pl_module, labels))
        to_images = trainer.datamodule.to_images
        grid = image_grid(torch.cat([to_images(x), to_images(recon)]), nrow=len(x))
        publish_grid(trainer, "reconstructions", grid, f"epoch_{trainer.current_epoch:04d}.png")
