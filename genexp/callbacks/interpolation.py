"""Decoded paths between the codes of pairs of examples, linear and spherical, one row per pair
with the two real examples at its ends.

Spherical interpolation (Shoemake 1985; for latent spaces White 2016) keeps the norm of codes
drawn from a Gaussian prior near the typical shell, where linear midpoints fall inside it.
"""

import lightning as L
import torch
from torch import Tensor

from genexp.images import image_grid, publish_grid
from genexp.callbacks.latent import Codes, LatentView


def lerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """(N, D), (N, D), (T,) -> (N, T, D)."""
    t = t.view(1, -1, 1)
    return (1 - t) * a.unsqueeze(1) + t * b.unsqueeze(1)


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation along the great circle through a and b (norms interpolated
    linearly); (N, D), (N, D), (T,) -> (N, T, D). Falls back to lerp for parallel codes."""
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1).clamp(-1.0, 1.0)
    omega = torch.acos(cos).view(-1, 1, 1)
    t = t.view(1, -1, 1)
    sin = torch.sin(omega)
    parallel = sin.abs() < 1e-6
    safe_sin = torch.where(parallel, torch.ones_like(sin), sin)
    wa = torch.where(parallel, 1 - t, torch.sin((1 - t) * omega) / safe_sin)
    wb = torch.where(parallel, t, torch.sin(t * omega) / safe_sin)
    return wa * a.unsqueeze(1) + wb * b.unsqueeze(1)


class LatentInterpolation(LatentView):
    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"n_pairs": "int >= 1", "n_steps": "int >= 1"}
    tag = "latent_interpolation"

    def __init__(self, n_pairs: int = 4, n_steps: int = 8, every_n_epochs: int | None = None) -> None:
        super().__init__(every_n_epochs)
        self.n_pairs = n_pairs
        self.n_steps = n_steps

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, split: str, name: str) -> None:
        datamodule = trainer.datamodule
        codes = Codes(pl_module, datamodule, split, 2 * self.n_pairs)
        n_pairs = len(codes.z) // 2
        if n_pairs == 0:
            return
        x = codes.x[:2 * n_pairs].view(n_pairs, 2, *codes.x.shape[1:])
        z = codes.z[:2 * n_pairs].view(n_pairs, 2, -1)
        # A conditional model decodes each row with the label of its first example.
        labels = codes.labels[:2 * n_pairs:2].repeat_interleave(self.n_steps)
        t = torch.linspace(0, 1, self.n_steps, device=z.device)
        for mode, path in (("linear", lerp), ("spherical", slerp)):
            decoded = codes.decode(path(z[:, 0], z[:, 1], t).flatten(0, 1), labels)
            decoded = decoded.view(n_pairs, self.n_steps, *decoded.shape[1:])
            rows = torch.cat([x[:, :1], decoded, x[:, 1:]], dim=1).flatten(0, 1)
            grid = image_grid(datamodule.to_images(rows), nrow=self.n_steps + 2)
            publish_grid(trainer, f"{self.tag}/{mode}", grid, f"{name}.png")
