"""Evaluate a saved run: `python -m genexp.evaluate run=<run dir or checkpoint> [feature_extractor=classifier]
[n_fake=1000] [n_samples=64] [seed=...] [model.<key>=...]`.

Rebuilds the run from its saved config and checkpoint, runs its model family's test step on
the test split (the metrics of metrics.json, recomputed), scores n_fake samples against the
test split (FID, KID, precision/recall and Inception Score on the features of
conf/feature_extractor/<name>.yaml; feature_extractor=none skips this), and writes <run dir>/eval.json and a sample grid
<run dir>/samples/eval.png. `model.<key>=value` changes a key of the saved model config that leaves
the weights as they are, e.g. a diffusion model's sampler: model.sampler.steps=250 (recorded in eval.json).
"""

import time

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar

from genexp.callbacks.samples import SampleGrid
from genexp.metrics.features import extractor_from_config
from genexp.metrics.sample_quality import draw_images, evaluate_samples
from genexp.report import scalar_metrics, write_metrics
from genexp.saved_run import SavedRun, exit_on_user_error, parse_cli

USAGE = __doc__.split("\n\n")[0]


def sample_quality(datamodule: L.LightningDataModule, model: L.LightningModule, extractor_name: str,
                   n_fake: int, seed: int) -> dict:
    """FID, KID, precision/recall and Inception Score of n_fake samples against the test split."""
    extractor, cache_dir = extractor_from_config(extractor_name, datamodule)
    return evaluate_samples(draw_images(model, datamodule, n_fake, seed), datamodule, extractor, split="test",
                            cache_dir=cache_dir)


def evaluate(saved: SavedRun, n_samples: int = 64, seed: int | None = None,
             feature_extractor: str = "classifier", n_fake: int = 1000) -> dict:
    cfg = saved.cfg
    seed = cfg.seed if seed is None else seed
    L.seed_everything(seed, workers=True)
    datamodule, model = saved.build()
    trainer = L.Trainer(accelerator=cfg.trainer.accelerator, devices=1, precision=cfg.trainer.precision,
                        limit_test_batches=cfg.trainer.limit_test_batches, logger=False,
                        enable_model_summary=False, callbacks=[RichProgressBar(leave=False)],
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
              "model_overrides": saved.model_overrides, "metrics": metrics, "sample_quality": quality, "sample_grid": grid,
              "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_metrics(saved.run_dir / "eval.json", record)
    return record


@exit_on_user_error
def main(argv: list[str]) -> None:
    args = parse_cli(argv, USAGE, {"run": None, "n_samples": 64, "seed": None, "feature_extractor": "classifier",
                                   "n_fake": 1000})
    saved = SavedRun.open(args.run)
    saved.override_model(args.get("model"))
    record = evaluate(saved, args.n_samples, args.seed, str(args.feature_extractor), args.n_fake)
    quality = record["sample_quality"] or {"scores": {}}
    for key, value in (record["metrics"] | quality["scores"]).items():
        print(f"{key:32s} {value:.6g}")
    if record["sample_quality"]:
        print(f"sample quality provenance: {quality['provenance']}")
    print(f"wrote {saved.run_dir / 'eval.json'}")


if __name__ == "__main__":
    main()
