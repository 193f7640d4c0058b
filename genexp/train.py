"""One run, top to bottom: data, model, callbacks, loggers, fit, test, report."""

import inspect
import os
import signal
import time
from contextlib import AbstractContextManager, nullcontext
from datetime import timedelta
from pathlib import Path

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LambdaCallback, ModelCheckpoint, ProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.strategies import StrategyRegistry
from omegaconf import DictConfig, OmegaConf

from genexp.callbacks.gc_freeze import FreezeLongLivedObjects
from genexp.callbacks.random_state import RandomState
from genexp.callbacks.stop_on_signal import StopOnSignal
from genexp.checkpoint_io import AtomicCheckpointIO, read_checkpoint
from genexp.compilation import compile_networks
from genexp.errors import CheckpointError, RunDirError, RunInterrupted, find_user_error
from genexp import jobs
from genexp.console import print_run_end, print_run_start, quiet_library_chatter
from genexp.errors import ConfigError
from genexp.hparams import write_hparams_row
from genexp.report import scalar_metrics, write_metrics


def check_fresh_run_dir(output_dir: Path) -> None:
    """A run never writes into a directory that already holds another run's results (the command
    line refuses it before Hydra writes anything: genexp.jobs.RunDirGuard; this guards `run(cfg)`)."""
    if jobs.is_worker() or _slurm_requeued(output_dir):
        return  # a DDP worker re-launched by Lightning into the run directory of rank 0
    taken = [name for name in ("metrics.json", "checkpoints", "tensorboard") if (output_dir / name).exists()]
    if taken:
        raise RunDirError(f"{output_dir} already holds a run ({', '.join(taken)}); "
                          f"choose another directory with hydra.run.dir=...")


def check_hardware(cfg: DictConfig) -> None:
    """Settings that the machine cannot honour as asked are refused, naming the key, rather than
    silently changed (Lightning turns 16-mixed into bf16-mixed on a CPU)."""
    import torch

    trainer = cfg.trainer
    if trainer.accelerator not in ("cpu", "auto") or (trainer.accelerator == "auto" and torch.cuda.is_available()):
        return
    if str(trainer.precision) in ("16-mixed", "16"):
        raise ConfigError(f"trainer.precision={trainer.precision} needs a CUDA GPU (float16 autocast); on the CPU "
                          f"use trainer.precision=bf16-mixed (bfloat16 autocast) or 32-true")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    devices = trainer.devices
    if isinstance(devices, int) and devices > cores:
        raise ConfigError(f"trainer.devices={devices} starts {devices} training processes on a CPU with {cores} "
                          f"cores: each process would get less than a core and every step would wait on the "
                          f"slowest; use trainer.devices={cores} or fewer (or a GPU: trainer=gpu)")


def instantiate_data_and_model(cfg: DictConfig) -> tuple[L.LightningDataModule, L.LightningModule]:
    """The data module and the untrained model of a config (of a new run, or of a saved one).

    A model that refuses the data raises the GenexpError itself, not Hydra's wrapper of it."""
    try:
        datamodule = instantiate(cfg.data)
        # Not recursive: the optimizer and lr_scheduler configs stay plain dicts that the module
        # instantiates itself, so checkpoints hold config values, not pickled objects.
        model = instantiate(cfg.model, _recursive_=False, _convert_="all",
                            optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
                            lr_scheduler=OmegaConf.to_container(cfg.lr_scheduler, resolve=True))
    except InstantiationException as error:
        user_error = find_user_error(error)
        if user_error is None:
            raise
        raise user_error from None
    return datamodule, model


def _slurm_requeued(output_dir: Path) -> bool:
    """A SLURM job requeued by Lightning restarts in its own directory, from its hpc checkpoint."""
    return SLURMEnvironment.detect() and any(output_dir.glob("hpc_ckpt_*.ckpt"))


def resume_checkpoint(cfg: DictConfig, model: L.LightningModule) -> Path | None:
    """The checkpoint a resumed run (cfg.resume) continues from; None for a new run, which must
    get a directory of its own."""
    output_dir = Path(cfg.paths.output_dir)
    if not cfg.get("resume"):
        check_fresh_run_dir(output_dir)
        return None
    last = output_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise RunDirError(f"resume={cfg.resume}: no checkpoint at {last}; the run stopped before its first "
                          f"checkpoint, start it again")
    try:
        read_checkpoint(last, model)
    except CheckpointError as error:  # refused like a taken directory: its metrics.json stays as it is
        raise RunDirError(f"resume={cfg.resume}: {error}") from None
    return last


def trainer_plugins(cfg: DictConfig) -> list:
    """Atomic checkpoint writes always; under SLURM, Lightning's requeue on the time-limit signal."""
    plugins: list = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():
        plugins.append(SLURMEnvironment(auto_requeue=cfg.slurm.auto_requeue,
                                        requeue_signal=signal.Signals[cfg.slurm.requeue_signal]))
    return plugins


def strategy(cfg: DictConfig, model: L.LightningModule | None) -> str:
    """`trainer.strategy`, except that a model stepping several optimizers by hand (a GAN) leaves
    one network out of each backward pass, which plain DDP takes for an error: it gets DDP with
    unused-parameter detection. `auto` on several nodes is named `ddp`, as Lightning would choose,
    so that it gets the process-group timeout of make_trainer."""
    name = str(cfg.trainer.strategy)
    if name == "auto" and cfg.trainer.num_nodes > 1:
        name = "ddp"
    if model is not None and not model.automatic_optimization and name in ("ddp", "ddp_spawn"):
        return f"{name}_find_unused_parameters_true"
    return name


class NoProfiler(PassThroughProfiler):
    """Lightning's default when no profiler is asked for, without its per-call context manager:
    Lightning wraps every hook of every callback in `profiler.profile(...)`, some 200 times a step,
    and building a generator-based context each time costs about as much as the hooks themselves
    (docs/benchmark.md). `trainer.profiler=simple` (or any other) profiles as usual."""

    def profile(self, action_name: str) -> AbstractContextManager:
        return _NO_CONTEXT


_NO_CONTEXT = nullcontext()  # reusable: entering and leaving it does nothing


def make_trainer(cfg: DictConfig, *first_callbacks: L.Callback, model: L.LightningModule | None = None) -> L.Trainer:
    """The Trainer of a run: `cfg.trainer`, the configured callbacks (after `first_callbacks`) and
    loggers, random states and signal handling for resume, atomic checkpoint writes, and the
    long-lived objects out of the garbage collector's way while training."""
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c]
    if not cfg.trainer.enable_progress_bar:  # Lightning refuses a progress bar it was told not to show
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    stop_on_signal = StopOnSignal(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
    loggers = [instantiate(c) for c in cfg.logger.values() if c]
    # From the first training step on, a failed run keeps its directory and its failure record.
    started = LambdaCallback(on_train_start=lambda *_: jobs.mark_training_started())
    # A strategy that takes a process-group timeout gets distributed.timeout_s (absent from runs saved
    # before the key existed): a process whose peer died stops within it instead of hanging.
    name, timeout_s = strategy(cfg, model), OmegaConf.select(cfg, "distributed.timeout_s")
    registered = StrategyRegistry[name] if name in StrategyRegistry else None  # its class and arguments
    if timeout_s is not None and registered and "timeout" in inspect.signature(registered["strategy"]).parameters:
        name = registered["strategy"](**registered["init_params"], timeout=timedelta(seconds=timeout_s))
    return L.Trainer(**{**cfg.trainer, "strategy": name, "profiler": cfg.trainer.get("profiler") or NoProfiler()},
                     callbacks=[*first_callbacks, *callbacks, RandomState(), FreezeLongLivedObjects(), stop_on_signal,
                                started],
                     logger=loggers or False, plugins=trainer_plugins(cfg), default_root_dir=cfg.paths.output_dir)


def run(cfg: DictConfig) -> float | None:
    """Train and test one configuration; return the value a sweeper optimises (cfg.optimized_metric)."""
    started = time.perf_counter()
    output_dir = Path(cfg.paths.output_dir)
    check_hardware(cfg)
    quiet_library_chatter()
    if not jobs.is_worker():
        print_run_start(cfg, *jobs.run_choices(cfg), jobs.run_overrides())
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule, model = instantiate_data_and_model(cfg)
    resume_from = resume_checkpoint(cfg, model)
    compile_networks(model, cfg.get("compile"))  # in place: checkpoints keep their eager keys
    trainer = make_trainer(cfg, model=model)
    stop_on_signal = next(c for c in trainer.callbacks if isinstance(c, StopOnSignal))
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from)
    if stop_on_signal.received:
        stop_interrupted(trainer, stop_on_signal, output_dir, started)
    fit_metrics = scalar_metrics(trainer.callback_metrics)

    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if isinstance(checkpoint, ModelCheckpoint) else ""
    test_metrics = {}
    if cfg.test:
        # Not verbose: the run's closing lines print the test metrics.
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True, verbose=False)
        test_metrics = {k: v for k, v in scalar_metrics(trainer.callback_metrics).items() if k.startswith("test/")}

    final = {k: v for k, v in fit_metrics.items() if k.startswith(("val/", "train/"))} | test_metrics
    if trainer.is_global_zero:
        record = {
            "status": "completed",
            "metrics": final,
            "monitor": model.monitor,
            "best_checkpoint": best,
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "wall_time_s": round(time.perf_counter() - started, 2),
            # What the run really used, which `auto` settings leave to the machine.
            "precision": str(trainer.precision),
            "accelerator": type(trainer.accelerator).__name__.removesuffix("Accelerator").lower(),
            "world_size": trainer.world_size,
        }
        write_metrics(output_dir / "metrics.json", record)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                # One HParams row per run: what sets it apart beside the metrics it is judged by.
                write_hparams_row(Path(logger.log_dir), cfg, final, model.monitor, trainer.global_step)
    if trainer.is_global_zero:
        print_run_end(output_dir, record)
    return final.get(cfg.optimized_metric) if cfg.optimized_metric else None


def stop_interrupted(trainer: L.Trainer, stop: StopOnSignal, output_dir: Path, started: float) -> None:
    """Record an interrupted run (status 'interrupted', where it stopped) and end it."""
    if trainer.is_global_zero:
        write_metrics(output_dir / "metrics.json", {
            "status": "interrupted",
            "signal": stop.received,
            "metrics": {},
            "last_checkpoint": str(stop.last_checkpoint),
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "wall_time_s": round(time.perf_counter() - started, 2),
        })
    raise RunInterrupted(stop.received, f"{stop.received} stopped the run at step {trainer.global_step}; "
                                        f"its last checkpoint is {stop.last_checkpoint}; continue it with "
                                        f"`python -m genexp resume={output_dir}`")
