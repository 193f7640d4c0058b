"""The split's latent codes as a 2D scatter coloured by label, as in the book's latent-space
figures; codes with more than two dimensions are shown on their first two principal components.

Drawn with matplotlib's object-oriented API on the Agg canvas (no pyplot, no display needed),
saved as PNG and added to TensorBoard as an image.
"""

import lightning as L
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.decomposition import PCA

from genexp.images import figure_image, publish_grid
from genexp.callbacks.latent import Codes, LatentView


def project_2d(z: np.ndarray) -> tuple[np.ndarray, tuple[str, str]]:
    """(N, D) codes as (N, 2) points with axis names: the codes themselves for D <= 2, else PCA."""
    if z.shape[1] <= 2 or len(z) < 2:
        return np.pad(z[:, :2], ((0, 0), (0, 2 - min(z.shape[1], 2)))), ("z[0]", "z[1]")
    pca = PCA(n_components=2).fit(z)
    share = pca.explained_variance_ratio_
    return pca.transform(z), (f"PC 1 ({share[0]:.0%} of variance)", f"PC 2 ({share[1]:.0%})")


def scatter_figure(points: np.ndarray, labels: np.ndarray | None, axes: tuple[str, str], title: str) -> Figure:
    figure = Figure(figsize=(6, 5), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=8, alpha=0.6)
    else:
        n_classes = int(labels.max()) + 1
        cmap, top = ("tab10", 10) if n_classes <= 10 else ("viridis", n_classes)
        dots = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap=cmap, vmin=-0.5, vmax=top - 0.5,
                          s=8, alpha=0.7)
        if n_classes <= 10:
            ax.legend(*dots.legend_elements(), title="label", loc="best", fontsize="small", markerscale=0.8)
        else:
            figure.colorbar(dots, ax=ax, label="label")
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.set_title(title)
    figure.tight_layout()
    return figure


class LatentScatter(LatentView):
    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"n_points": "int >= 1"}
    tag = "latent_scatter"
    needs_images = False

    def __init__(self, n_points: int = 2000, every_n_epochs: int | None = None) -> None:
        super().__init__(every_n_epochs)
        self.n_points = n_points

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, split: str, name: str) -> None:
        codes = Codes(pl_module, trainer.datamodule, split, self.n_points)
        points, axes = project_2d(codes.z.float().cpu().numpy())
        labelled = getattr(trainer.datamodule, "num_classes", None)
        labels = codes.labels.cpu().numpy() if labelled else None
        title = f"{type(pl_module).__name__}: {len(points)} {split} codes"
        publish_grid(trainer, self.tag, figure_image(scatter_figure(points, labels, axes, title)), f"{name}.png")
