"""Per-dimension latent traversals: one row per latent dimension, in which that dimension of one
example's code sweeps from mean - span * std to mean + span * std (its spread over the split)
while the others stay fixed, as in the beta-VAE papers (Higgins et al. 2017).

Rows are the most active dimensions first: activity is the variance of the codes over the
data (Burda et al. 2016's measure of active units), so a 200-dimensional code shows the few
dimensions the model actually uses.
"""

import lightning as L
import torch

from genexp.callbacks.images import image_grid, publish_grid
from genexp.callbacks.latent import Codes, LatentView


class LatentTraversal(LatentView):
    tag = "latent_traversal"

    def __init__(self, max_dims: int = 10, n_steps: int = 9, span: float = 2.5, n_samples: int = 500,
                 every_n_epochs: int | None = None) -> None:
        super().__init__(every_n_epochs)
        self.max_dims = max_dims
        self.n_steps = n_steps
        self.span = span
        self.n_samples = n_samples  # examples that measure each dimension's spread

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, split: str, name: str) -> None:
        codes = Codes(pl_module, trainer.datamodule, split, self.n_samples)
        mean, std = codes.z.mean(0), codes.z.std(0, unbiased=False)
        dims = std.argsort(descending=True)[:self.max_dims]
        steps = torch.linspace(-self.span, self.span, self.n_steps, device=mean.device)
        # (rows = dims, columns = steps) copies of the first example's code, one dimension swept per row.
        z = codes.z[0].repeat(len(dims), self.n_steps, 1)
        rows = torch.arange(len(dims), device=mean.device)
        z[rows, :, dims] = mean[dims, None] + steps[None, :] * std[dims, None]
        labels = codes.labels[:1].repeat(z.shape[0] * z.shape[1])
        images = trainer.datamodule.to_images(codes.decode(z.flatten(0, 1), labels))
        publish_grid(trainer, self.tag, image_grid(images, nrow=self.n_steps), f"{name}.png")
