"""Evaluate a saved run: `python -m genexp.evaluate run=<run dir or checkpoint> [feature_extractor=classifier]
[n_fake=1000] [n_samples=64] [seed=...]`.

Rebuilds the run from its saved config and checkpoint, runs its model family's test step on
the test split (the metrics of metrics.json, recomputed), scores n_fake samples against the
test split (FID, KID, precision/recall on the features of conf/feature_extractor/<name>.yaml;
feature_extractor=none skips this), and writes <run dir>/eval.json and a sample grid
<run dir>/samples/eval.png.
"""

import time

from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from genexp.callbacks.samples import SampleGrid
from genexp.config_dir import config_dir
from genexp.errors import ConfigError
from genexp.metrics.sample_quality import evaluate_samples
from genexp.report import scalar_metrics, write_metrics
from genexp.saved_run import SavedRun, exit_on_user_error, parse_cli

USAGE = __doc__.split("\n\n")[0]


def sample_quality(datamodule: L.LightningDataModule, model: L.LightningModule, extractor_name: str,
                   n_fake: int, seed: int, batch_size: int = 500) -> dict:
    """FID, KID and precision/recall of n_fake samples (labels spread evenly for conditional models)."""
    options = sorted(p.stem for p in (Path(config_dir()) / "feature_extractor").glob("*.yaml"))
    if extractor_name not in options:
        raise ConfigError(f"feature_extractor={extractor_name} is not one of: {', '.join(options)}, none")
    extractor_cfg = OmegaConf.load(Path(config_dir()) / "feature_extractor" / f"{extractor_name}.yaml")
    extractor = instantiate(extractor_cfg, datamodule=datamodule)
    num_classes = getattr(model, "num_classes", None)
    labels = torch.arange(n_fake) % num_classes if num_classes else None
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        images = torch.cat([datamodule.to_images(model.sample(
            len(chunk), labels=None if labels is None else labels[chunk].to(model.device), generator=generator).cpu())
            for chunk in torch.arange(n_fake).split(batch_size)])
    return evaluate_samples(images, datamodule, extractor, split="test", cache_dir=extractor_cfg.get("cache_dir"))


def evaluate(saved: SavedRun, n_samples: int = 64, seed: int | None = None,
             feature_extractor: str = "classifier", n_fake: int = 1000) -> dict:
    cfg = saved.cfg
    seed = cfg.seed if seed is None else seed
    L.seed_everything(seed, workers=True)
    datamodule, model = saved.build()
    trainer = L.Trainer(accelerator=cfg.trainer.accelerator, devices=1, precision=cfg.trainer.precision,
                        limit_test_batches=cfg.trainer.limit_test_batches, logger=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(saved.run_dir))
    trainer.test(model, datamodule=datamodule, verbose=False)
    metrics = {k: v for k, v in scalar_metrics(trainer.callback_metrics).items() if k.startswith("test/")}
    grid = quality = None
    if hasattr(datamodule, "to_images"):
        if feature_extractor != "none":
            quality = sample_quality(datamodule, model, feature_extractor, n_fake, seed)
        SampleGrid(n_samples=n_samples, seed=seed).write(trainer, model, "eval.png", tensorboard=False)
        grid = str(saved.run_dir / "samples" / "eval.png")
    record = {"status": "completed", "checkpoint": str(saved.checkpoint), "split": "test", "seed": seed,
              "metrics": metrics, "sample_quality": quality, "sample_grid": grid,
              "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_metrics(saved.run_dir / "eval.json", record)
    return record


@exit_on_user_error
def main(argv: list[str]) -> None:
    args = parse_cli(argv, USAGE, {"run": None, "n_samples": 64, "seed": None, "feature_extractor": "classifier",
                                   "n_fake": 1000})
    saved = SavedRun.open(args.run)
    record = evaluate(saved, args.n_samples, args.seed, str(args.feature_extractor), args.n_fake)
    quality = record["sample_quality"] or {"scores": {}}
    for key, value in (record["metrics"] | quality["scores"]).items():
        print(f"{key:32s} {value:.6g}")
    if record["sample_quality"]:
        print(f"sample quality provenance: {quality['provenance']}")
    print(f"wrote {saved.run_dir / 'eval.json'}")


if __name__ == "__main__":
    main()
