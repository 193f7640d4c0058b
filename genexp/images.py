"""Image grids and figures, written to the run directory and to TensorBoard, and the eval mode
that a model draws them in."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torchvision.utils import make_grid, save_image

MIN_DISPLAY_SIDE = 32  # small images (8x8 digits) are enlarged, pixel for pixel, to be seen


@contextmanager
def evaluating(module: L.LightningModule) -> Iterator[None]:
    """Eval mode without gradients, then the mode the module was in."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


def image_grid(images: torch.Tensor, nrow: int) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> one (3, H', W') grid, enlarged by an integer factor if small."""
    images = images.detach().float().cpu().clamp(0, 1)
    scale = max(1, MIN_DISPLAY_SIDE // images.shape[-1])
    if scale > 1:
        images = F.interpolate(images, scale_factor=scale, mode="nearest")
    return make_grid(images, nrow=nrow, padding=2, pad_value=1.0)


def figure_image(figure) -> torch.Tensor:
    """A rendered matplotlib figure as a (3, H, W) tensor in [0, 1]."""
    figure.canvas.draw()
    rgba = np.asarray(figure.canvas.buffer_rgba())
    return torch.from_numpy(rgba[..., :3].copy()).permute(2, 0, 1).float() / 255.0


def publish_grid(trainer: L.Trainer, tag: str, grid: torch.Tensor, file_name: str,
                 tensorboard: bool = True) -> Path:
    """Save the grid as <run dir>/<tag>/<file_name> and add it to every TensorBoard logger."""
    path = Path(trainer.default_root_dir) / tag / file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path)
    for logger in trainer.loggers if tensorboard else []:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, grid, global_step=trainer.global_step)
    return path
