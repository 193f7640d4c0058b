"""Sample quality during training: FID, KID, precision/recall and Inception Score of samples
against a validation split, every N epochs, logged as val/fid, val/kid, val/precision,
val/recall and val/is so that `model.monitor=val/fid` can pick the best checkpoint.

The reference features are read once per fit (cached on disk by genexp.metrics.sample_quality,
and kept in memory here). The scores are logged only on validation epochs whose number is a
multiple of `every_n_epochs`; a ModelCheckpoint that monitors one of them must check on the same
epochs (its own `every_n_epochs`, as conf/callbacks/with_fid.yaml sets it). Every rank computes
the same scores from the same seed, so that each rank's checkpoint callback finds them.

The samples come from the model's `preview` (its cheap sampler while training, see
genexp.models.base; `sample` unless the model has a cheaper one), recorded as "sampler" in the
provenance; genexp.evaluate scores the full `sample`.
"""

import json
from pathlib import Path

import lightning as L

from genexp.errors import ConfigError
from genexp.metrics.features import dataset_key, extractor_from_config
from genexp.metrics.sample_quality import draw_images, real_features, score_samples

LOGGED = {"fid": "val/fid", "kid_mean": "val/kid", "precision": "val/precision", "recall": "val/recall",
          "is_mean": "val/is"}


class SampleQuality(L.Callback):
    # Checked by genexp.validate before torch is imported (the rule language is described there).
    config_rules = {"every_n_epochs": "int >= 1", "n_samples": "int >= 1", "seed": "int >= 0"}

    def __init__(self, every_n_epochs: int | None = None, n_samples: int = 500, feature_extractor: str = "classifier",
                 split: str = "val", seed: int = 1234, k: int = 3) -> None:
        self.every_n_epochs = every_n_epochs
        self.n_samples = n_samples
        self.feature_extractor = feature_extractor
        self.split = split
        self.seed = seed
        self.k = k
        self.history: list[dict] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or not self.every_n_epochs:
            return
        datamodule = trainer.datamodule
        if not hasattr(datamodule, "to_images"):
            raise ConfigError("callbacks.sample_quality scores images; this data set has none "
                              "(set callbacks.sample_quality.every_n_epochs=null)")
        self.extractor, cache_dir = extractor_from_config(self.feature_extractor, datamodule)
        self.real = real_features(datamodule, self.split, self.extractor, cache_dir)
        self.reference = f"{dataset_key(datamodule)}/{self.split}"

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.every_n_epochs or trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        images = draw_images(pl_module, trainer.datamodule, self.n_samples, self.seed, preview=True)
        result = score_samples(images, self.real, self.extractor, self.reference, self.k)
        result["provenance"]["sampler"] = "preview"
        for key, name in LOGGED.items():
            if key in result["scores"]:
                pl_module.log(name, result["scores"][key])
        if trainer.is_global_zero:
            self._record(trainer, result)

    def _record(self, trainer: L.Trainer, result: dict) -> None:
        """<run dir>/sample_quality.json: the provenance of the logged scores and their history."""
        self.history.append({"epoch": trainer.current_epoch, "step": trainer.global_step} | result["scores"])
        path = Path(trainer.default_root_dir) / "sample_quality.json"
        path.write_text(json.dumps({"provenance": result["provenance"], "logged_as": LOGGED,
                                    "history": self.history}, indent=2) + "\n")

