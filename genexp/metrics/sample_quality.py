"""FID, KID (torchmetrics) and precision/recall (Kynkaanniemi et al. 2019) of samples against a
reference split, on the features of one extractor; real features are cached on disk by
(data set, split, extractor and its weights), so a second evaluation does not recompute them."""

import lightning as L
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from genexp.data.image_tensor import cached_tensors
from genexp.metrics.features import cache_root, dataset_key, extract, real_images

class PrecomputedFeatures(nn.Module):
    """Lets torchmetrics' FID and KID take feature vectors instead of images."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features

def real_features(datamodule: L.LightningDataModule, split: str, extractor: nn.Module,
                  cache_dir: str | None = None) -> torch.Tensor:
    name = f"{dataset_key(datamodule)}-{split}-{extractor.name}-{extractor.weights_hash}.pt"
    path = cache_root(cache_dir) / "real_features" / name
    return cached_tensors(path, lambda: {"features": extract(extractor, real_images(datamodule, split))})["features"]

def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): each set's manifold is the union
    of balls around its points with radius the distance to the k-th nearest neighbour; precision
    is the fraction of fake points inside the real manifold, recall the reverse."""
    def inside(points: torch.Tensor, centres: torch.Tensor) -> float:
        radii = torch.cdist(centres, centres).kthvalue(k + 1, dim=1).values  # +1: a point is its own 0th neighbour
        return (torch.cdist(points, centres) <= radii).any(dim=1).double().mean().item()

    return inside(fake, real), inside(real, fake)

def sample_quality(real: torch.Tensor, fake: torch.Tensor, k: int = 3, kid_subsets: int = 10,
                   kid_subset_size: int = 1000) -> dict[str, float]:
    """Scores of fake against real features (N, D)."""
    dim = real.shape[1]
    fid = FrechetInceptionDistance(feature=PrecomputedFeatures(dim)).double()
    kid = KernelInceptionDistance(feature=PrecomputedFeatures(dim), subsets=kid_subsets,
                                  subset_size=min(kid_subset_size, len(real), len(fake))).double()
    for metric in (fid, kid):
        metric.update(real, real=True)
        metric.update(fake, real=False)
    kid_mean, kid_std = kid.compute()
    precision, recall = precision_recall(real.float(), fake.float(), k)
    return {"fid": fid.compute().item(), "kid_mean": kid_mean.item(), "kid_std": kid_std.item(),
            "precision": precision, "recall": recall}

def evaluate_samples(fake_images: torch.Tensor, datamodule: L.LightningDataModule, extractor: nn.Module,
                     split: str = "test", cache_dir: str | None = None, k: int = 3) -> dict:
    """Scores of images in [0, 1] against a split, with their provenance beside them."""
    real = real_features(datamodule, split, extractor, cache_dir)
    fake = extract(extractor, fake_images)
    return {"scores": sample_quality(real, fake, k),
            "provenance": {"extractor": extractor.name, "weights_sha256": extractor.weights_hash,
                           "reference": f"{dataset_key(datamodule)}/{split}", "n_real": len(real),
                           "n_fake": len(fake), "k": k, "extractor_record": getattr(extractor, "record", None)}}
