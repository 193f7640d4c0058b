"""Latent arithmetic: an attribute vector, the mean code of labelled examples that have an
attribute (label `target`) minus the mean code of those that do not (label `source`), added
in growing amounts to the codes of examples without it (the book's CelebA "Blond_Hair" faces;
White 2016). One row per example: the example, then decode(z + alpha * v) for each alpha.
"""

from collections.abc import Sequence

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from genexp.images import image_grid, publish_grid
from genexp.callbacks.latent import Codes, LatentView


def attribute_vector(z: Tensor, labels: Tensor, source: int, target: int) -> Tensor | None:
    """mean(z | label = target) - mean(z | label = source); None if either label is absent."""
    has, lacks = z[labels == target], z[labels == source]
    if not len(has) or not len(lacks):
        return None
    return has.mean(0) - lacks.mean(0)


def arithmetic_grid(model: L.LightningModule, datamodule: L.LightningDataModule, source: int, target: int,
                    alphas: Sequence[float], n_images: int = 8, n_attribute: int = 2000,
                    split: str = "test") -> Tensor | None:
    """The grid described above, the vector measured on the first n_attribute training examples
    and applied to the first n_images examples of `split` with label `source`. None (with a
    warning) where the labels are absent from the data."""
    labelled = Codes(model, datamodule, "train", n_attribute)
    vector = attribute_vector(labelled.z, labelled.labels, source, target)
    examples = Codes(model, datamodule, split, max(n_images * 20, 200))
    chosen = (examples.labels == source).nonzero().flatten()[:n_images]
    if vector is None or not len(chosen):
        rank_zero_warn(f"latent arithmetic skipped: the data has no examples labelled {source} "
                       f"(source) or {target} (target)")
        return None
    alphas = torch.tensor(list(alphas), device=vector.device, dtype=vector.dtype)
    z = examples.z[chosen, None, :] + alphas[None, :, None] * vector  # (images, alphas, D)
    labels = examples.labels[chosen].repeat_interleave(len(alphas))
    decoded = examples.decode(z.flatten(0, 1), labels).view(len(chosen), len(alphas), *examples.x.shape[1:])
    rows = torch.cat([examples.x[chosen, None], decoded], dim=1).flatten(0, 1)
    return image_grid(datamodule.to_images(rows), nrow=len(alphas) + 1)


class LatentArithmetic(LatentView):
    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"n_images": "int >= 1", "n_attribute": "int >= 2"}
    tag = "latent_arithmetic"

    def __init__(self, source: int = 0, target: int = 1, alphas: Sequence[float] = (0.0, 0.5, 1.0, 1.5, 2.0),
                 n_images: int = 8, n_attribute: int = 2000, every_n_epochs: int | None = None) -> None:
        super().__init__(every_n_epochs)
        self.source = source
        self.target = target
        self.alphas = list(alphas)
        self.n_images = n_images
        self.n_attribute = n_attribute

    def applies(self, trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
        return super().applies(trainer, pl_module) and bool(getattr(trainer.datamodule, "num_classes", None))

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, split: str, name: str) -> None:
        grid = arithmetic_grid(pl_module, trainer.datamodule, self.source, self.target, self.alphas,
                               self.n_images, self.n_attribute, split)
        if grid is not None:
            publish_grid(trainer, self.tag, grid, f"{name}_{self.source}_to_{self.target}.png")
