"""Views of 2D data every epoch: p_data beside the learned p_model as heat-maps, and model samples
drawn over the data. One PNG per epoch in <run dir>/density/ and an image in TensorBoard.

Any model on 2D data gets the samples panel; the p_model heat-map needs `log_prob(x)`. The
p_data panel is the true density where the data module knows it, else a histogram of the data.
"""

import lightning as L
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from genexp.callbacks.images import evaluating, figure_image, publish_grid

PANEL_INCHES = 3.0
DPI = 80
HISTOGRAM_BINS = 40  # per axis, for data without a known density (a few thousand points)


class Density2D(L.Callback):
    def __init__(self, every_n_epochs: int = 1, grid_size: int = 128, n_samples: int = 2000,
                 seed: int = 1234) -> None:
        self.every_n_epochs = every_n_epochs
        self.grid_size = grid_size
        self.n_samples = n_samples
        self.seed = seed
        self._data: dict[str, np.ndarray] | None = None  # the data panels never change: drawn once

    @staticmethod
    def applies(trainer: L.Trainer) -> bool:
        datamodule = trainer.datamodule
        return tuple(getattr(datamodule, "shape", ())) == (2,) and hasattr(datamodule, "example_batch")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or not self.applies(trainer):
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.write(trainer, pl_module, f"epoch_{trainer.current_epoch:04d}.png")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.applies(trainer):
            self.write(trainer, pl_module, "final.png", tensorboard=False)

    def _grid(self) -> torch.Tensor:
        (x0, x1), (y0, y1) = self._data["extent"].reshape(2, 2)
        xs, ys = torch.meshgrid(torch.linspace(x0, x1, self.grid_size), torch.linspace(y0, y1, self.grid_size),
                                indexing="xy")
        return torch.stack([xs.flatten(), ys.flatten()], dim=1)

    def _prepare_data(self, datamodule) -> None:
        points = datamodule.example_batch("val", self.n_samples)[0].float()
        centre = (points.max(0).values + points.min(0).values) / 2
        half = 0.55 * (points.max(0).values - points.min(0).values).max()  # square, with a margin
        extent = torch.stack([centre - half, centre + half], dim=1).flatten().numpy()
        self._data = {"points": points.numpy(), "extent": extent}
        data_log_prob = getattr(datamodule, "log_prob", None)
        if data_log_prob is not None:
            density = data_log_prob(self._grid()).exp().view(self.grid_size, self.grid_size).numpy()
            self._data |= {"density": density, "title": "p_data (true density)"}
        else:
            bins = [np.linspace(low, high, HISTOGRAM_BINS + 1) for low, high in extent.reshape(2, 2)]
            histogram = np.histogram2d(*points.numpy().T, bins=bins, density=True)[0]
            self._data |= {"density": histogram.T, "title": "data (histogram)"}

    def figure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> torch.Tensor:
        """The three panels as one (3, H, W) image in [0, 1]."""
        if self._data is None:
            self._prepare_data(trainer.datamodule)
        with evaluating(pl_module):
            samples = pl_module.sample(self.n_samples, generator=torch.Generator().manual_seed(self.seed))
            model_density = None
            if hasattr(pl_module, "log_prob"):
                log_p = pl_module.log_prob(self._grid().to(pl_module.device))
                model_density = log_p.exp().view(self.grid_size, self.grid_size).cpu().numpy()

        fig = Figure(figsize=(3 * PANEL_INCHES, PANEL_INCHES + 0.4), dpi=DPI, layout="constrained")
        axes = fig.subplots(1, 3)
        extent, points = self._data["extent"], self._data["points"]
        vmax = float(self._data["density"].max())  # one colour scale for both densities
        heat = {"extent": extent, "origin": "lower", "cmap": "viridis", "vmin": 0.0, "vmax": vmax}
        axes[0].imshow(self._data["density"], **heat)
        axes[0].set_title(self._data["title"])
        if model_density is None:
            axes[1].text(0.5, 0.5, "no log_prob(x)", ha="center", va="center", transform=axes[1].transAxes)
        else:
            axes[1].imshow(model_density, **heat)
        axes[1].set_title("p_model (learned density)")
        samples = samples.detach().float().cpu().numpy()
        axes[2].scatter(points[:, 0], points[:, 1], s=2, c="0.6", label="data")
        axes[2].scatter(samples[:, 0], samples[:, 1], s=2, c="tab:orange", alpha=0.6, label="samples")
        axes[2].set_title("samples over data")
        axes[2].set_xlim(extent[0], extent[1])
        axes[2].set_ylim(extent[2], extent[3])
        axes[2].set_aspect("equal")
        for ax in axes:
            ax.set_xticks([])
            ax.set_yticks([])
        metric = trainer.callback_metrics.get("val/nll")
        fig.suptitle(f"epoch {trainer.current_epoch}" + (f", val nll {float(metric):.3f} nats" if metric is not None
                                                          else ""))
        FigureCanvasAgg(fig)  # a figure made without pyplot renders through a canvas attached to it
        return figure_image(fig)

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, file_name: str,
              tensorboard: bool = True) -> None:
        publish_grid(trainer, "density", self.figure(trainer, pl_module), file_name, tensorboard)
