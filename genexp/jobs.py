"""What a Hydra job does around `run(cfg)`: a failed job is recorded in its own directory, a
job of a sweep fails alone, and DDP worker processes rejoin their own job's directory.

No torch import here: the CLI uses this module before a run starts.
"""

import hashlib
import math
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from genexp.report import write_metrics


# Command line options of a Hydra app that take a value (kept when a DDP worker is started).
_VALUE_OPTIONS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")
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
