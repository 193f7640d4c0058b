"""Views of 2D data: p_data beside the learned p_model as heat-maps, and model samples drawn over the
data. A PNG in <run dir>/density/ and an image in TensorBoard every `every_n_epochs` epochs and on
the last epoch (epoch_NNNN.png), and final.png after training.

Any model on 2D data gets the samples panel; the p_model heat-map is its density where the model has
`log_prob(x)`, else a histogram of its samples (GANs, diffusion). The p_data panel is the true density where the data module knows it, else a histogram of the data.
Training epochs show the model's `preview` samples, final.png its full `sample` (see
genexp.models.base).

What a drawing costs: the model's log_prob on grid_size^2 points and n_samples samples, then the
figure, which is built and laid out once per fit; each drawing repaints only what changes (the
p_model image, the samples and the title) over a saved copy of the rest. scripts/density2d_cost.py
measures the view's share of a run.
"""

import lightning as L
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from genexp.images import evaluating, publish_grid

PANEL_INCHES = 3.0
DPI = 80
HISTOGRAM_BINS = 40  # per axis, for data without a known density (a few thousand points)


class Density2D(L.Callback):
    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"every_n_epochs": "int >= 1", "grid_size": "int >= 2", "n_samples": "int >= 1", "seed": "int >= 0"}

    def __init__(self, every_n_epochs: int = 5, grid_size: int = 64, n_samples: int = 2000,
                 seed: int = 1234) -> None:
        self.every_n_epochs = every_n_epochs
        self.grid_size = grid_size
        self.n_samples = n_samples
        self.seed = seed
        self._data: dict[str, np.ndarray] | None = None  # the data panels never change: computed once
        self._view: _View | None = None  # the figure: built once per fit

    @staticmethod
    def applies(trainer: L.Trainer) -> bool:
        datamodule = trainer.datamodule
        return tuple(getattr(datamodule, "shape", ())) == (2,) and hasattr(datamodule, "example_batch")

    def draws_on(self, trainer: L.Trainer) -> bool:
        """Whether this epoch's validation is drawn: every `every_n_epochs` epochs, and the last epoch."""
        return (trainer.current_epoch + 1) % self.every_n_epochs == 0 or is_last_epoch(trainer)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._data = self._view = None  # another fit may bring other data

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or not self.applies(trainer):
            return
        if self.draws_on(trainer):
            self.write(trainer, pl_module, f"epoch_{trainer.current_epoch:04d}.png", preview=True)

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
            self._data |= {"density": density, "title": "p_data (true density)", "interpolation": "bilinear"}
        else:
            bins = [np.linspace(low, high, HISTOGRAM_BINS + 1) for low, high in extent.reshape(2, 2)]
            histogram = np.histogram2d(*points.numpy().T, bins=bins, density=True)[0]
            self._data |= {"density": histogram.T, "title": "data (histogram)", "interpolation": "nearest"}

    def figure(self, trainer: L.Trainer, pl_module: L.LightningModule, preview: bool = False) -> torch.Tensor:
        """The three panels as one (3, H, W) image in [0, 1]; the samples from `pl_module.preview`
        if `preview`, else from `pl_module.sample`."""
        if self._data is None:
            self._prepare_data(trainer.datamodule)
        draw = pl_module.preview if preview else pl_module.sample
        with evaluating(pl_module):
            samples = draw(self.n_samples, generator=torch.Generator().manual_seed(self.seed))
            if hasattr(pl_module, "log_prob"):
                log_p = pl_module.log_prob(self._grid().to(pl_module.device))
                model_density = log_p.exp().view(self.grid_size, self.grid_size).cpu().numpy()
                model_title = "p_model (learned density)"
            else:
                # Models that only sample (GANs, diffusion): the density of their samples, as a histogram.
                points = samples.detach().float().cpu().numpy()
                bins = [np.linspace(low, high, HISTOGRAM_BINS + 1) for low, high in self._data["extent"].reshape(2, 2)]
                model_density = np.histogram2d(*points.T, bins=bins, density=True)[0].T
                model_title = "p_model (histogram of samples)"
        if self._view is None or self._view.model_title != model_title:
            self._view = _View(self._data, model_density.shape[0], model_title)
        metric = trainer.callback_metrics.get("val/nll")
        title = f"epoch {trainer.current_epoch}" + (f", val nll {float(metric):.3f} nats" if metric is not None else "")
        return self._view.render(model_density, samples.detach().float().cpu().numpy(), title)

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, file_name: str,
              tensorboard: bool = True, preview: bool = False) -> None:
        publish_grid(trainer, "density", self.figure(trainer, pl_module, preview), file_name, tensorboard)


def is_last_epoch(trainer: L.Trainer) -> bool:
    """Whether the epoch now ending is the fit's last, by max_epochs or max_steps (or a callback that
    asked to stop). A fit stopped otherwise still ends with final.png."""
    if trainer.should_stop:
        return True
    max_epochs, max_steps = trainer.max_epochs, trainer.max_steps
    return ((max_epochs is not None and max_epochs >= 0 and trainer.current_epoch + 1 >= max_epochs)
            or (max_steps is not None and max_steps >= 0 and trainer.global_step >= max_steps))


class _View:
    """The figure of the three panels, built and laid out once: each render repaints the p_model image,
    the samples, the frames over them and the title over a saved copy of everything else (matplotlib's
    blitting), the same pixels as drawing the whole figure."""

    def __init__(self, data: dict, grid_size: int, model_title: str) -> None:
        self.model_title = model_title
        histogram = "histogram" in model_title
        fig = Figure(figsize=(3 * PANEL_INCHES, PANEL_INCHES + 0.4), dpi=DPI, layout="constrained")
        axes = fig.subplots(1, 3)
        extent, points = data["extent"], data["points"]
        vmax = float(data["density"].max())  # one colour scale for both densities
        heat = {"extent": extent, "origin": "lower", "cmap": "viridis", "vmin": 0.0, "vmax": vmax}
        axes[0].imshow(data["density"], interpolation=data["interpolation"], **heat)
        axes[0].set_title(data["title"])
        self.model_image = axes[1].imshow(np.zeros((grid_size, grid_size)), **heat,
                                          interpolation="nearest" if histogram else "bilinear")
        axes[1].set_title(model_title)
        axes[2].scatter(points[:, 0], points[:, 1], s=2, c="0.6", label="data")
        self.samples = axes[2].scatter(np.zeros(0), np.zeros(0), s=2, c="tab:orange", alpha=0.6, label="samples")
        axes[2].set_title("samples over data")
        axes[2].set_xlim(extent[0], extent[1])
        axes[2].set_ylim(extent[2], extent[3])
        axes[2].set_aspect("equal")
        for ax in axes:
            ax.set_xticks([])
            ax.set_yticks([])
        self.title = fig.suptitle("epoch 0, val nll 0.000 nats")  # a line's height in the layout
        # What each render paints, in the order a full draw would: a panel's contents, then its frame.
        self.changing = [self.model_image, *axes[1].spines.values(),
                         self.samples, *axes[2].spines.values(), self.title]
        for artist in self.changing:
            artist.set_animated(True)  # left out of the background
        self.figure = fig
        self.canvas = FigureCanvasAgg(fig)
        self.canvas.draw()  # lays out the figure and paints all but the animated artists
        fig.set_layout_engine("none")  # the layout stays as it is now
        self.background = self.canvas.copy_from_bbox(fig.bbox)

    def render(self, model_density: np.ndarray, samples: np.ndarray, title: str) -> torch.Tensor:
        """The figure with these contents as a (3, H, W) image in [0, 1]."""
        self.model_image.set_data(model_density)
        self.samples.set_offsets(samples)
        self.title.set_text(title)
        self.canvas.restore_region(self.background)
        for artist in self.changing:
            self.figure.draw_artist(artist)
        rgba = np.asarray(self.canvas.buffer_rgba())
        return torch.from_numpy(rgba[..., :3].copy()).permute(2, 0, 1).float() / 255.0
