"""How a sampler turns noise into data, frame by frame: a diffusion model's reverse process x_1 -> x_0,
an energy-based model's Langevin chain. For any model with
    sampling_chain(n, n_frames, generator=None, preview=False) -> (n_frames, n, *shape) in data space
(first frame the noise, last the samples): images as a strip per chain (one row each, time left to
right), 2D points as a row of scatter plots over the data. Written to <run dir>/chains/ and
TensorBoard every `every_n_epochs` epochs from the model's cheap preview sampler, and as final.png
after training from its full sampler.
"""

import lightning as L
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from genexp.images import evaluating, figure_image, image_grid, publish_grid

PANEL_INCHES = 1.8


class SamplingChain(L.Callback):
    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"n_chains": "int >= 1", "n_frames": "int >= 2", "every_n_epochs": "int >= 1", "seed": "int >= 0",
                    "n_points": "int >= 1"}

    def __init__(self, n_chains: int = 8, n_frames: int = 10, every_n_epochs: int = 5, n_points: int = 1000,
                 seed: int = 1234) -> None:
        self.n_chains = n_chains
        self.n_frames = n_frames
        self.every_n_epochs = every_n_epochs
        self.n_points = n_points  # 2D data: points per panel
        self.seed = seed

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, file_name: str, tensorboard: bool = True,
              preview: bool = False) -> None:
        datamodule = trainer.datamodule
        images = hasattr(datamodule, "to_images")
        with evaluating(pl_module):
            frames = pl_module.sampling_chain(self.n_chains if images else self.n_points, self.n_frames,
                                              generator=torch.Generator().manual_seed(self.seed), preview=preview)
        frames = frames.detach().float().cpu()
        if images:
            # (frames, chains, ...) -> one row per chain, time running left to right
            strip = datamodule.to_images(frames.transpose(0, 1).flatten(0, 1))
            grid = image_grid(strip, nrow=self.n_frames)
        else:
            grid = scatter_panels(frames, datamodule.example_batch("val", self.n_points)[0].float())
        publish_grid(trainer, "chains", grid, file_name, tensorboard)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or not applies(trainer, pl_module):
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.write(trainer, pl_module, f"epoch_{trainer.current_epoch:04d}.png", preview=True)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and applies(trainer, pl_module):
            self.write(trainer, pl_module, "final.png", tensorboard=False)


def applies(trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
    """Models with a sampling chain, on images or 2D points."""
    datamodule = trainer.datamodule
    shows = hasattr(datamodule, "to_images") or tuple(getattr(datamodule, "shape", ())) == (2,)
    return shows and hasattr(pl_module, "sampling_chain")


def scatter_panels(frames: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
    """One scatter plot per frame of 2D points, on the data's extent, as a (3, H, W) image."""
    n_frames = len(frames)
    figure = Figure(figsize=(PANEL_INCHES * n_frames, PANEL_INCHES), dpi=80, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, n_frames)
    low, high = data.min(0).values, data.max(0).values
    margin = 0.25 * (high - low)
    for index, (ax, points) in enumerate(zip(axes, frames)):
        ax.scatter(points[:, 0], points[:, 1], s=1, c="tab:orange", alpha=0.5)
        ax.set_xlim(low[0] - margin[0], high[0] + margin[0])
        ax.set_ylim(low[1] - margin[1], high[1] + margin[1])
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title("noise" if index == 0 else "samples" if index == n_frames - 1 else f"{index}", fontsize=8)
    return figure_image(figure)
