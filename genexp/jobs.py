"""What a Hydra job does around `run(cfg)`: a failed job is recorded in its own directory, a
job of a sweep fails alone, and DDP worker processes rejoin their own job's directory.

No torch import here: the CLI uses this module before a run starts.
"""

import hashlib
import math
import os
import sys
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from genexp.errors import RunDirError
from genexp.report import write_metrics


# Command line options of a Hydra app that take a value (kept when a DDP worker is started).
_VALUE_OPTIONS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")
# What a resumed run may change beside `resume=`: how long it trains and what it prints, not what
# it trains.
RESUME_OVERRIDABLE = ("trainer.max_epochs", "trainer.max_steps", "trainer.max_time", "print_config", "test")
# The command as the user typed it: each job of a sweep rewrites sys.argv for its workers.
_SWEEP_ARGV = list(sys.argv)


def in_sweep() -> bool:
    """True inside a job of `-m` / `--multirun` (any launcher)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def failure_value() -> float:
    """What a failed job returns: NaN, except to Optuna's Hydra sweeper (1.3), which stops the
    whole search on a NaN objective; a trial there gets the worst value of its direction."""
    sweeper = HydraConfig.get().sweeper
    if "optuna" not in str(sweeper.get("_target_", "")):
        return math.nan
    return -math.inf if "max" in str(sweeper.get("direction", "minimize")) else math.inf


def resume_overrides(argv: list[str]) -> list[str]:
    """`resume=<dir>` runs Hydra in that directory and keeps its saved .hydra/ files as they are."""
    resume = next((a.split("=", 1)[1] for a in argv if a.startswith("resume=")), "")
    if not resume or resume == "null":
        return []
    saved = _saved_config(resume)
    if not saved.is_file():
        raise RunDirError(f"resume={resume}: no saved config at {saved}; give the directory of a run "
                          f"started by `python -m genexp`")
    return [f"hydra.run.dir={saved.parent.parent}", "hydra.output_subdir=null"]


def _saved_config(run_dir: str) -> Path:
    return Path(run_dir).expanduser().resolve() / ".hydra" / "config.yaml"


def resumed_config(cfg: DictConfig) -> DictConfig:
    """The saved config of the run in cfg.resume, with this command's schedule overrides; what
    is refused is a RunDirError, so the run's own metrics.json stays as it is."""
    saved = _saved_config(cfg.resume)
    resumed = OmegaConf.load(saved)
    for override in HydraConfig.get().overrides.task:
        key = override.split("=", 1)[0].lstrip("+~")
        if key == "resume" or key.startswith("hydra."):
            continue
        if key not in RESUME_OVERRIDABLE:
            raise RunDirError(f"{key}: a resumed run keeps its saved config; beside resume= only "
                              f"{', '.join(RESUME_OVERRIDABLE)} may be overridden")
        OmegaConf.update(resumed, key, OmegaConf.select(cfg, key), force_add=True)
    with open_dict(resumed):
        resumed.resume = resumed.paths.output_dir = str(saved.parent.parent)  # was ${hydra:runtime.output_dir}
    return resumed


class WritableRunDir(Callback):
    """Hydra callback (conf/hydra/default.yaml): a run or sweep directory that cannot be written
    (read-only, a file on the way, no space) stops the command with one line before Hydra
    writes into it."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        _check_writable(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        _check_writable(config, "hydra.sweep.dir")


def _check_writable(config: DictConfig, key: str) -> None:
    HydraConfig.instance().set_config(config)  # as Hydra does next: the directory pattern reads it
    directory = Path(OmegaConf.select(config, key))
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        print(f"genexp: error: cannot write the run directory {directory} ({error.strerror or error}); "
              f"choose another with {key}=... or GENEXP_LOG_DIR=...", file=sys.stderr)
        sys.exit(2)


def job_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def record_failure(error: BaseException) -> None:
    """metrics.json with status 'failed', the error and its traceback, in this job's directory."""
    if os.environ.get("LOCAL_RANK", "0") != "0":
        return  # rank 0 writes the record
    write_metrics(job_dir() / "metrics.json", {
        "status": "failed",
        "error": f"{type(error).__name__}: {error}",
        "traceback": "".join(traceback.format_exception(error)),
        "metrics": {},
    })


@contextmanager
def isolated_job() -> Iterator[None]:
    """Run one job so that the next job of a sweep starts clean: DDP workers of this job start
    this job alone, and the job's process group, environment (Lightning sets LOCAL_RANK,
    WORLD_SIZE, MASTER_PORT ... in the launching process) and sys.argv are undone afterwards."""
    environ, argv = dict(os.environ), list(sys.argv)
    _pin_worker_command_to_job()
    try:
        yield
    finally:
        if "torch" in sys.modules:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()
        os.environ.clear()
        os.environ.update(environ)
        sys.argv = argv


def _pin_worker_command_to_job() -> None:
    """Make the command that Lightning's DDP launcher re-runs for ranks > 0 start this one job.

    Lightning starts each extra rank as `sys.argv` + `hydra.run.dir=<HydraConfig run.dir>`.
    Inside a sweep, sys.argv still holds `-m` and the whole sweep, and run.dir is the pattern of
    single runs, so every rank would start a sweep of its own in new directories. Here the
    command becomes this job's own overrides as a single run in this job's directory.
    """
    if not in_sweep():
        return
    hydra_cfg = HydraConfig.get()
    options, args = [], iter(_SWEEP_ARGV[1:])
    for arg in args:
        if arg in _VALUE_OPTIONS:
            options += [arg, next(args, "")]
        elif arg.startswith("-") and "=" not in arg and arg not in ("-m", "--multirun"):
            options.append(arg)
        elif arg.startswith(tuple(f"{o}=" for o in _VALUE_OPTIONS)):
            options.append(arg)
    sys.argv = [_SWEEP_ARGV[0], *options, *hydra_cfg.overrides.task]
    # Lightning reads the run directory from here when it builds the worker command.
    from omegaconf import read_write

    with read_write(hydra_cfg.run):
        hydra_cfg.run.dir = str(job_dir())


def short_dirname(override_dirname: str, limit: int = 160) -> str:
    """A sweep job's directory name from its overrides, cut to stay within file system limits
    (255 bytes a name); a cut name ends in a hash of the whole, so it stays unique."""
    if len(override_dirname.encode()) <= limit:
        return override_dirname
    digest = hashlib.sha1(override_dirname.encode()).hexdigest()[:8]
    return f"{override_dirname.encode()[:limit - 9].decode(errors='ignore')}~{digest}"
