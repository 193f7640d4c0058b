"""A cheap distance between real and generated images that needs no network weights: the
unbiased squared maximum mean discrepancy (Gretton et al. 2012) on pixels average-pooled to
at most 16x16, with a mixture of Gaussian kernels whose bandwidths are 0.5, 1 and 2 times
the median squared distance between the real images (the median heuristic).

It runs offline on every validation epoch, so GANs have a checkpoint monitor; on vector data
(the 2D sets) it compares the points themselves. Lower is
better; about 0 (and possibly slightly negative) when both sets come from one distribution.
It measures how well pixel statistics match, coarsely: not perceptual quality as FID does.
The same real images give the same bandwidth, so values are comparable across epochs.
"""

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

POOLED_SIDE = 16
BANDWIDTH_SCALES = (0.5, 1.0, 2.0)


def pixel_features(images: Tensor) -> Tensor:
    """(N, C, H, W) in [0, 1] -> (N, C * s * s) with s = min(H, 16); vectors (N, D) stay as they are."""
    if images.dim() != 4:
        return images.float().flatten(1)
    side = min(images.shape[-1], POOLED_SIDE)
    return F.adaptive_avg_pool2d(images.float(), side).flatten(1)


def mmd_squared(x: Tensor, y: Tensor) -> Tensor:
    """Unbiased MMD^2 between feature sets x (real, which sets the bandwidth) and y, >= 2 rows each."""
    d_xx, d_yy, d_xy = torch.cdist(x, x) ** 2, torch.cdist(y, y) ** 2, torch.cdist(x, y) ** 2
    off_x = ~torch.eye(len(x), dtype=torch.bool, device=x.device)
    off_y = ~torch.eye(len(y), dtype=torch.bool, device=y.device)
    bandwidth = d_xx[off_x].median().clamp_min(1e-12)

    def kernel(d: Tensor) -> Tensor:
        return sum(torch.exp(-d / (s * bandwidth)) for s in BANDWIDTH_SCALES) / len(BANDWIDTH_SCALES)

    return kernel(d_xx)[off_x].mean() + kernel(d_yy)[off_y].mean() - 2 * kernel(d_xy).mean()


class PixelMMD(Metric):
    """Accumulates the first `max_examples` real and generated images (per process) of an
    epoch and computes their pixel MMD^2; Lightning logs and resets it each epoch."""

    higher_is_better = False
    full_state_update = False

    def __init__(self, max_examples: int = 1000, **kwargs) -> None:
        super().__init__(**kwargs)
        self.max_examples = max_examples
        self.add_state("real", default=[], dist_reduce_fx="cat")
        self.add_state("fake", default=[], dist_reduce_fx="cat")

    def room(self) -> int:
        """How many more examples of this epoch the metric keeps."""
        return self.max_examples - sum(len(r) for r in self.real)

    def update(self, real: Tensor, fake: Tensor) -> None:
        """Both batches in [0, 1]."""
        room = self.room()
        if room > 0:
            self.real.append(pixel_features(real[:room]))
            self.fake.append(pixel_features(fake[:room]))

    def compute(self) -> Tensor:
        real, fake = dim_zero_cat(self.real), dim_zero_cat(self.fake)
        if len(real) < 2:
            return torch.tensor(float("nan"), device=real.device)
        return mmd_squared(real, fake)
