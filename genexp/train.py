"""One run, top to bottom: data, model, callbacks, loggers, fit, test, report."""

import os
import time
from pathlib import Path

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from genexp.errors import RunDirError, find_user_error
from genexp.report import flatten, print_config_tree, scalar_metrics, write_metrics


def check_fresh_run_dir(output_dir: Path) -> None:
    """A run never writes into a directory that already holds another run's results."""
    if os.environ.get("LOCAL_RANK", "0") != "0":
        return  # a DDP worker re-launched by Lightning into the run directory of rank 0
    taken = [name for name in ("metrics.json", "checkpoints", "tensorboard") if (output_dir / name).exists()]
    if taken:
        raise RunDirError(f"{output_dir} already holds a run ({', '.join(taken)}); "
                          f"choose another directory with hydra.run.dir=...")


def instantiate_data_and_model(cfg: DictConfig) -> tuple[L.LightningDataModule, L.LightningModule]:
    """The data module and the untrained model of a config (of a new run, or of a saved one).

    A model that refuses the data raises the GenexpError itself, not Hydra's wrapper of it."""
    try:
        datamodule = instantiate(cfg.data)
        # Not recursive: the optimizer and scheduler configs stay plain dicts that the module
        # instantiates itself, so checkpoints hold config values, not pickled objects.
        model = instantiate(cfg.model, _recursive_=False, _convert_="all",
                            optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
                            scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True))
    except InstantiationException as error:
        user_error = find_user_error(error)
        if user_error is None:
            raise
        raise user_error from None
    return datamodule, model


def run(cfg: DictConfig) -> float | None:
    """Train and test one configuration; return the value a sweeper optimises (cfg.optimized_metric)."""
    started = time.perf_counter()
    output_dir = Path(cfg.paths.output_dir)
    check_fresh_run_dir(output_dir)
    if cfg.print_config:
        print_config_tree(cfg)
    L.seed_everything(cfg.seed, workers=True)

    datamodule, model = instantiate_data_and_model(cfg)
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c]
    if not cfg.trainer.enable_progress_bar:  # Lightning refuses a progress bar it was told not to show
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    loggers = [instantiate(c) for c in cfg.logger.values() if c]
    trainer = L.Trainer(**cfg.trainer, callbacks=callbacks, logger=loggers or False,
                        default_root_dir=str(output_dir))

    trainer.fit(model, datamodule=datamodule)
    fit_metrics = scalar_metrics(trainer.callback_metrics)

    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if isinstance(checkpoint, ModelCheckpoint) else ""
    test_metrics = {}
    if cfg.test:
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        test_metrics = {k: v for k, v in scalar_metrics(trainer.callback_metrics).items() if k.startswith("test/")}

    final = {k: v for k, v in fit_metrics.items() if k.startswith(("val/", "train/"))} | test_metrics
    if trainer.is_global_zero:
        write_metrics(output_dir / "metrics.json", {
            "status": "completed",
            "metrics": final,
            "monitor": model.monitor,
            "best_checkpoint": best,
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "wall_time_s": round(time.perf_counter() - started, 2),
        })
        hparams = flatten(cfg)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                # One HParams row per run: the flattened config beside the final metrics.
                logger.log_hyperparams(hparams, metrics={f"hp/{k}": v for k, v in final.items()})
                logger.finalize("success")
    return final.get(cfg.optimized_metric) if cfg.optimized_metric else None
