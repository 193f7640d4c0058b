"""Feature extractors for sample-quality metrics: images in [0, 1] (N, C, H, W) -> features (N, D).

Every extractor has a `name` and a `weights_hash` (scores from different extractors or weights
are not comparable, so both travel with every score).
  InceptionFeatures: the standard FID Inception network (torchmetrics / torch-fidelity), from
    a weights file that is never downloaded during a run.
  ClassifierFeatures: a compact classifier that genexp trains once per data set and caches,
    for offline use on small data sets; its test accuracy is recorded beside its weights.
Both also give class logits (`logits(images)`), from which the Inception Score is computed.
`extractor_from_config` builds one from its config, conf/feature_extractor/<name>.yaml.
"""

import hashlib
import json
import math
import os
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from genexp.config_dir import config_dir
from genexp.console import progress
from genexp.errors import ConfigError
from genexp.files import write_atomically, write_text_atomically

INCEPTION_WEIGHTS_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                         "weights-inception-2015-12-05-6726825d.pth")


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def cache_root(cache_dir: str | None) -> Path:
    return Path(cache_dir or os.environ.get("GENEXP_CACHE_DIR", "~/.cache/genexp")).expanduser()


class InceptionFeatures(nn.Module):
    """The 2048-d pool features of the FID Inception v3 (Heusel et al. 2017), via torchmetrics."""

    def __init__(self, feature_extractor_weights_path: str | None = None, datamodule=None) -> None:
        super().__init__()  # `datamodule`: taken like every extractor's, not needed by this one
        path = Path(feature_extractor_weights_path or
                    Path(torch.hub.get_dir()) / "checkpoints" / Path(INCEPTION_WEIGHTS_URL).name).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"feature_extractor=inception needs the FID Inception weights at {path}, and a run never "
                f"downloads them. Fetch them once where you are online: `wget {INCEPTION_WEIGHTS_URL} -O "
                f"{path}`, then set feature_extractor.feature_extractor_weights_path={path} (or use "
                f"feature_extractor=classifier, which works offline)")
        from torchmetrics.image.fid import NoTrainInceptionV3

        # torchmetrics' network gives one output per pass: pool features or the 1008 class logits.
        self.net, self.logits_net = (
            NoTrainInceptionV3(name="inception-v3-compat", features_list=[output],
                               feature_extractor_weights_path=str(path))
            for output in ("2048", "logits_unbiased"))
        self.name = "inception-v3-compat"
        self.weights_hash = file_hash(path)

    @staticmethod
    def _uint8_rgb(images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        return (images.clamp(0, 1) * 255).round().to(torch.uint8)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self._uint8_rgb(images)).flatten(1)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits_net(self._uint8_rgb(images)).flatten(1)


class CompactClassifier(nn.Module):
    """Two batch-normalised conv blocks, a 4x4 average grid and a 128-d feature layer, then a
    linear layer to the classes."""

    num_features = 128

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
            nn.Flatten(), nn.Linear(64 * 16, self.num_features), nn.ReLU())
        self.head = nn.Linear(self.num_features, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def _images(datamodule: L.LightningDataModule, split: str):
    """(images in [0, 1], labels) batches of a split, as a model would see them."""
    datamodule.setup()
    loader = {"train": datamodule.train_dataloader, "val": datamodule.val_dataloader,
              "test": datamodule.test_dataloader}[split]()
    for batch in loader:
        x, y = datamodule.on_after_batch_transfer(batch, 0)
        yield datamodule.to_images(x), y


def dataset_key(datamodule: L.LightningDataModule) -> str:
    """Names a data set as it is served (class, shape, source files, split seed)."""
    fingerprint = getattr(datamodule, "source_fingerprint", lambda: "")()
    shape = "x".join(map(str, datamodule.shape))
    return f"{type(datamodule).__name__.lower()}-{shape}-{fingerprint}-split{getattr(datamodule, 'split_seed', 0)}"


class ClassifierFeatures(nn.Module):
    """The features of a CompactClassifier trained on the data set's train split, once: the
    weights and a record with their test accuracy are kept in <cache_dir>/extractors/."""

    def __init__(self, datamodule: L.LightningDataModule, cache_dir: str | None = None, epochs: int = 5,
                 lr: float = 3e-3, seed: int = 0) -> None:
        super().__init__()
        if not datamodule.num_classes or len(getattr(datamodule, "shape", ())) != 3:
            raise ConfigError("feature_extractor=classifier needs labelled image data (data.num_classes set); "
                              "use feature_extractor=inception for unlabelled images")
        self.net = CompactClassifier(datamodule.shape[0], datamodule.num_classes)
        weights = cache_root(cache_dir) / "extractors" / f"classifier-{dataset_key(datamodule)}-e{epochs}-s{seed}.pt"
        if not weights.is_file():
            record = self._train(datamodule, epochs, lr, seed)
            # The record first: weights on disk always have theirs beside them.
            write_text_atomically(weights.with_suffix(".json"), json.dumps(record, indent=2) + "\n")
            write_atomically(weights, lambda file: torch.save(self.net.state_dict(), file))
        self.net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.record = json.loads(weights.with_suffix(".json").read_text())
        self.net.eval()
        self.name = "classifier"
        self.weights_hash = file_hash(weights)
        self.weights_path = weights

    def _train(self, datamodule: L.LightningDataModule, epochs: int, lr: float, seed: int) -> dict:
        torch.manual_seed(seed)
        optimizer = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.net.train()
        for _ in range(epochs):
            for images, labels in _images(datamodule, "train"):
                loss = F.cross_entropy(self.net(images), labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        self.net.eval()
        correct = total = 0
        with torch.no_grad():
            for images, labels in _images(datamodule, "test"):
                correct += (self.net(images).argmax(1) == labels).sum().item()
                total += len(labels)
        return {"data": dataset_key(datamodule), "epochs": epochs, "lr": lr, "seed": seed,
                "test_accuracy": correct / max(total, 1), "test_examples": total}

    def train(self, mode: bool = True) -> "ClassifierFeatures":
        return super().train(False)  # a fixed measuring instrument

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.features(images.float())

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images.float())


def extractor_from_config(name: str, datamodule: L.LightningDataModule) -> tuple[nn.Module, str | None]:
    """The extractor of conf/feature_extractor/<name>.yaml for a data set, and its cache directory."""
    options = sorted(p.stem for p in (Path(config_dir()) / "feature_extractor").glob("*.yaml"))
    if name not in options:
        raise ConfigError(f"feature_extractor={name} is not one of: {', '.join(options)}, none")
    cfg = OmegaConf.load(Path(config_dir()) / "feature_extractor" / f"{name}.yaml")
    return instantiate(cfg, datamodule=datamodule), cfg.get("cache_dir")


def extract(extractor: nn.Module, images, batch_size: int = 256) -> torch.Tensor:
    """Features of an image tensor, or of an iterable of image batches, in float64 on the CPU."""
    batches = images.split(batch_size) if isinstance(images, torch.Tensor) else images
    total = len(batches) if isinstance(batches, tuple) else None
    with torch.no_grad():
        parts = [extractor(b).double().cpu() for b in progress(batches, "image features", total)]
    features = torch.cat(parts)
    if not math.isfinite(features.sum().item()):
        raise ValueError("the feature extractor returned NaN or infinite features")
    return features


def real_images(datamodule: L.LightningDataModule, split: str):
    """The images of a split, batch by batch, in [0, 1]."""
    return (images for images, _ in _images(datamodule, split))
