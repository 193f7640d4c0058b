"""FID, KID (torchmetrics) and precision/recall (Kynkaanniemi et al. 2019) of samples against a
reference split, on the features of one extractor, and the Inception Score (Salimans et al. 2016,
torchmetrics) of the samples on the extractor's class logits; real features are cached on disk by
(data set, split, extractor and its weights), so a second evaluation does not recompute them."""

import lightning as L
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from genexp.images import evaluating
from genexp.console import progress
from genexp.data.image_tensor import cached_tensors
from genexp.metrics.features import cache_root, dataset_key, extract, real_images

IS_SPLITS = 10  # the Inception Score's customary number of splits (Salimans et al. 2016)


class PrecomputedFeatures(nn.Module):
    """Lets torchmetrics' FID, KID and Inception Score take feature vectors (or logits) instead of images."""

    def __init__(self, num_features: int = 0) -> None:
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

def inception_score(logits: torch.Tensor, splits: int = IS_SPLITS, seed: int = 0) -> tuple[float, float]:
    """Mean and standard deviation over splits of exp(E KL(p(y|x) || p(y))) for class logits (N, K):
    from 1 (every sample the same class distribution) up to K (confident and balanced)."""
    metric = InceptionScore(feature=PrecomputedFeatures(), splits=min(splits, len(logits))).double()
    metric.update(logits.double())
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # compute() shuffles the samples into splits
        mean, std = metric.compute()
    return mean.item(), std.item()


def sample_quality(real: torch.Tensor, fake: torch.Tensor, k: int = 3, kid_subsets: int = 10,
                   kid_subset_size: int = 1000, fake_logits: torch.Tensor | None = None) -> dict[str, float]:
    """Scores of fake against real features (N, D); with the fakes' class logits, their Inception Score."""
    dim = real.shape[1]
    fid = FrechetInceptionDistance(feature=PrecomputedFeatures(dim)).double()
    kid = KernelInceptionDistance(feature=PrecomputedFeatures(dim), subsets=kid_subsets,
                                  subset_size=min(kid_subset_size, len(real), len(fake))).double()
    for metric in (fid, kid):
        metric.update(real, real=True)
        metric.update(fake, real=False)
    kid_mean, kid_std = kid.compute()
    precision, recall = precision_recall(real.float(), fake.float(), k)
    scores = {"fid": fid.compute().item(), "kid_mean": kid_mean.item(), "kid_std": kid_std.item(),
              "precision": precision, "recall": recall}
    if fake_logits is not None:
        scores["is_mean"], scores["is_std"] = inception_score(fake_logits)
    return scores

def evaluate_samples(fake_images: torch.Tensor, datamodule: L.LightningDataModule, extractor: nn.Module,
                     split: str = "test", cache_dir: str | None = None, k: int = 3) -> dict:
    """Scores of images in [0, 1] against a split, with their provenance beside them."""
    return score_samples(fake_images, real_features(datamodule, split, extractor, cache_dir), extractor,
                         f"{dataset_key(datamodule)}/{split}", k)


def score_samples(fake_images: torch.Tensor, real: torch.Tensor, extractor: nn.Module, reference: str,
                  k: int = 3) -> dict:
    """Scores of images in [0, 1] against the features of a reference, with their provenance."""
    fake = extract(extractor, fake_images)
    logits = extract(extractor.logits, fake_images) if hasattr(extractor, "logits") else None
    return {"scores": sample_quality(real, fake, k, fake_logits=logits),
            "provenance": {"extractor": extractor.name, "weights_sha256": extractor.weights_hash,
                           "reference": reference, "n_real": len(real), "n_fake": len(fake), "k": k,
                           "is_splits": None if logits is None else min(IS_SPLITS, len(logits)),
                           "extractor_record": getattr(extractor, "record", None)}}


def draw_images(model: L.LightningModule, datamodule: L.LightningDataModule, n: int, seed: int,
                batch_size: int = 500, preview: bool = False) -> torch.Tensor:
    """n samples as images in [0, 1] on the CPU (labels spread evenly for conditional models), in eval mode;
    `preview`: from the model's cheap preview sampler (scores during training) instead of `sample`."""
    labels = model.spread_labels(n)
    generator = torch.Generator().manual_seed(seed)
    chunks = torch.arange(n).split(batch_size)
    draw = model.preview if preview else model.sample
    with evaluating(model):
        images = torch.cat([datamodule.to_images(draw(
            len(chunk), labels=None if labels is None else labels[chunk].to(model.device), generator=generator).cpu())
            for chunk in progress(chunks, f"sampling {n}", total=len(chunks))])
    return images
