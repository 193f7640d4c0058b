"""Per-dimension latent traversals: one row per latent dimension, in which that dimension of one
example's code sweeps from mean - span * std to mean + span * std (its spread over the split)
while the others stay fixed, as in the beta-VAE papers (Higgins et al. 2017).

Rows are the most active dimensions first, each labelled on the image with its number and how
active it is. For a VAE (a model with `posterior`), activity is the dimension's
KL(q(z_d|x) || N(0, 1)) in nats, averaged over validation examples: what the dimension carries
about x. The dimensions a VAE leaves unused (posterior collapse) have a KL of about 0 and decode
to the same image across a row; those below `min_kl` are left out, so a row count below
`max_dims` says how many dimensions the model uses. Models without a posterior variance (the
plain autoencoder) are ranked by the variance of their codes over the validation split instead
(Burda et al. 2016's measure of active units), labelled "var", with no threshold.
"""

from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from genexp.images import image_grid, publish_grid
from genexp.callbacks.latent import ENCODE_BATCH, Codes, LatentView, label_kwargs

RANK_SPLIT = "val"  # where dimensions are ranked, whichever split is drawn
LABEL_MARGIN = 6  # pixels at least between a row label and the edges of its strip


def dimension_kl(model: L.LightningModule, x: Tensor, labels: Tensor) -> Tensor:
    """KL(q(z_d|x) || N(0, 1)) per latent dimension d in nats, averaged over the examples, (D,).
    Summed over d it is the VAE's KL term (genexp.models.vae.gaussian_kl)."""
    total = 0.0
    for i in range(0, len(x), ENCODE_BATCH):
        mu, logvar = model.posterior(x[i:i + ENCODE_BATCH], **label_kwargs(model, labels[i:i + ENCODE_BATCH]))
        total = total + (0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)).flatten(1).sum(0)
    return total / len(x)


@dataclass
class Ranking:
    """The dimensions a traversal shows, most active first, with their activity."""

    dims: Tensor  # (rows,) dimension indices
    scores: Tensor  # (rows,) KL in nats, or code variance
    measure: str  # "KL" or "var"

    def labels(self) -> list[str]:
        if self.measure == "KL":
            return [f"z{d}  KL {s:.2f} nats" for d, s in zip(self.dims.tolist(), self.scores.tolist())]
        return [f"z{d}  var {s:.2f}" for d, s in zip(self.dims.tolist(), self.scores.tolist())]


def rank_dimensions(model: L.LightningModule, codes: Codes, max_dims: int, min_kl: float) -> Ranking:
    """The `max_dims` most active dimensions of `codes`, by KL where the model has a posterior
    (those under `min_kl` nats left out, but at least one kept), else by the variance of the codes."""
    if callable(getattr(model, "posterior", None)):
        scores, measure = dimension_kl(model, codes.x, codes.labels), "KL"
    else:
        scores, measure = codes.z.var(0, unbiased=False), "var"
    order = scores.argsort(descending=True)[:max_dims]
    if measure == "KL":
        active = order[scores[order] >= min_kl]
        order = active if len(active) else order[:1]
    return Ranking(order, scores[order], measure)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: scalable
    except (TypeError, ImportError, OSError, AttributeError):
        return ImageFont.load_default()


def label_rows(grid: Tensor, labels: list[str], cell_height: int, cell_width: int) -> Tensor:
    """The grid (3, H, W) with a white strip on its left holding one label per row of cells,
    right-aligned and centred on the row. The strip is a whole number of cells wide, so the image is still a grid
    of `cell_width` columns (the first ones hold the labels)."""
    font = _font(max(11, min(22, round(0.35 * cell_height))))
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_width = max(measure.textbbox((0, 0), text, font=font)[2] for text in labels)
    strip = -(-(text_width + 2 * LABEL_MARGIN) // cell_width) * cell_width
    pixels = (grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    image = Image.new("RGB", (strip + pixels.shape[1], pixels.shape[0]), "white")
    image.paste(Image.fromarray(pixels), (strip, 0))
    draw = ImageDraw.Draw(image)
    for row, text in enumerate(labels):
        _, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        centre = 2 + row * cell_height + (cell_height - 2) / 2  # make_grid pads 2 pixels
        # Right-aligned, beside the row it names.
        draw.text((strip - LABEL_MARGIN - right, round(centre - (top + bottom) / 2)), text, fill="black", font=font)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255.0


class LatentTraversal(LatentView):
    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"max_dims": "int >= 1", "n_steps": "int >= 1", "span": "number > 0", "n_samples": "int >= 1"}
    tag = "latent_traversal"

    def __init__(self, max_dims: int = 10, n_steps: int = 9, span: float = 2.5, n_samples: int = 500,
                 min_kl: float = 0.01, every_n_epochs: int | None = None) -> None:
        super().__init__(every_n_epochs)
        self.max_dims = max_dims
        self.n_steps = n_steps
        self.span = span
        self.n_samples = n_samples  # examples that rank the dimensions and measure each one's spread
        self.min_kl = min_kl  # nats: VAE dimensions below it are left out (0 keeps them all)

    def ranking_codes(self, pl_module: L.LightningModule, datamodule: L.LightningDataModule, split: str,
                      codes: Codes) -> Codes:
        """Codes of the validation split, where dimensions are ranked; the drawn split's codes when
        it is the validation split or when there is none."""
        if split == RANK_SPLIT:
            return codes
        try:
            return Codes(pl_module, datamodule, RANK_SPLIT, self.n_samples)
        except (IndexError, KeyError):  # no validation examples (data.val_fraction=0)
            return codes

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, split: str, name: str) -> None:
        codes = Codes(pl_module, trainer.datamodule, split, self.n_samples)
        ranking = rank_dimensions(pl_module, self.ranking_codes(pl_module, trainer.datamodule, split, codes),
                                  self.max_dims, self.min_kl)
        dims = ranking.dims.to(codes.z.device)
        mean, std = codes.z.mean(0), codes.z.std(0, unbiased=False)
        steps = torch.linspace(-self.span, self.span, self.n_steps, device=mean.device)
        # (rows = dims, columns = steps) copies of the first example's code, one dimension swept per row.
        z = codes.z[0].repeat(len(dims), self.n_steps, 1)
        rows = torch.arange(len(dims), device=mean.device)
        z[rows, :, dims] = mean[dims, None] + steps[None, :] * std[dims, None]
        labels = codes.labels[:1].repeat(z.shape[0] * z.shape[1])
        images = trainer.datamodule.to_images(codes.decode(z.flatten(0, 1), labels))
        grid = image_grid(images, nrow=self.n_steps)
        cell_height = (grid.shape[1] - 2) // len(dims)
        cell_width = (grid.shape[2] - 2) // self.n_steps
        publish_grid(trainer, self.tag, label_rows(grid, ranking.labels(), cell_height, cell_width), f"{name}.png")
