"""What a Hydra job does around `run(cfg)`: a failed job is recorded in its own directory, a
job of a sweep fails alone, and DDP worker processes rejoin their own job's directory (started by
Lightning, or by torchrun / srun on other nodes with rank 0's very command line).

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
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from genexp.errors import RunDirError
from genexp.report import write_metrics


# Command line options of a Hydra app that take a value (kept when a DDP worker is started).
_VALUE_OPTIONS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")
# What a resumed run may change beside `resume=`: how long it trains and what it prints, not what
# it trains.
RESUME_OVERRIDABLE = ("trainer.max_epochs", "trainer.max_steps", "trainer.max_time", "print_config", "test",
                      "distributed.timeout_s")
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


class RunDirGuard(Callback):
    """Hydra callback (conf/hydra/default.yaml), called before Hydra writes anything: a new run
    claims an empty directory of its own and a sweep an empty sweep directory, or the command
    stops with one line (exit 2) and every file of an earlier run stays as it was."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        HydraConfig.instance().set_config(config)  # as Hydra does next: the directory pattern reads it
        directory = Path(OmegaConf.select(config, "hydra.run.dir")).absolute()
        given_dir = any(o.lstrip("+~").startswith("hydra.run.dir=") for o in config.hydra.overrides.hydra)
        if _distributed() and not given_dir:
            # Each process would name a directory of its own by its own clock.
            _refuse("a distributed run started by torchrun or srun needs the same hydra.run.dir=<directory> on "
                    "every node (on a file system they share); add it to the command line")
        if is_worker():
            _leave_records_to_rank_zero(config)
        if config.get("resume") or rejoins_run(directory):
            _make_writable(directory, "hydra.run.dir")
            return
        _refuse_if_taken(directory, "hydra.run.dir")
        new_dirs = [d for d in (directory, *directory.parents) if not d.exists()]
        _make_writable(directory, "hydra.run.dir")
        # Hydra's record folder, made here and atomically: of two runs started together into one
        # directory, only the one that makes it goes on.
        marker = directory / (config.hydra.output_subdir or ".genexp_run")
        try:
            marker.mkdir()
        except FileExistsError:
            _refuse(f"{directory} already holds a run (another run claimed it just now); choose another "
                    f"directory with hydra.run.dir=...")
        global _claimed
        _claimed = (directory, new_dirs)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        HydraConfig.instance().set_config(config)
        directory = Path(OmegaConf.select(config, "hydra.sweep.dir")).absolute()
        _refuse_if_taken(directory, "hydra.sweep.dir")
        _make_writable(directory, "hydra.sweep.dir")


# The directory this process claimed for its single run, and those it created for it (deepest
# first; none where the directory existed empty): what a run refused before training removes.
_claimed: tuple[Path, list[Path]] | None = None
_training_started = False


def is_worker() -> bool:
    """A distributed process other than the first (Lightning's DDP launcher, torchrun and srun set these)."""
    return any(os.environ.get(name, "0") != "0" for name in ("LOCAL_RANK", "RANK", "NODE_RANK", "SLURM_PROCID"))


def _distributed() -> bool:
    """A process of a run whose processes were started together from one command (torchrun sets
    WORLD_SIZE in each; Lightning's own launcher sets it only once the run has started)."""
    return is_worker() or int(os.environ.get("WORLD_SIZE", "1")) > 1


def _leave_records_to_rank_zero(config: DictConfig) -> None:
    """A worker writes no .hydra/ records into rank 0's run directory, and, when its command line is
    rank 0's own (torchrun, srun: the same job name, so the same log file), no log file either: its
    log goes to its console. Lightning's launcher names each worker's job, which keeps its own log."""
    with read_write(config.hydra), open_dict(config.hydra):
        config.hydra.output_subdir = None
        if any(o.startswith("hydra.job.name=") for o in config.hydra.overrides.hydra):
            return
        logging_cfg = config.hydra.job_logging
        files = [name for name, handler in (logging_cfg.get("handlers") or {}).items() if "filename" in handler]
        for name in files:
            del logging_cfg.handlers[name]
        for logger in [logging_cfg.get("root"), *(logging_cfg.get("loggers") or {}).values()]:
            if logger and logger.get("handlers"):
                logger.handlers = [h for h in logger.handlers if h not in files]


def rejoins_run(directory: Path) -> bool:
    """A process that joins a run started by another: a DDP worker launched into rank 0's directory,
    or a SLURM job requeued into its own directory to continue from its hpc checkpoint."""
    return is_worker() or ("SLURM_JOB_ID" in os.environ and any(directory.glob("hpc_ckpt_*.ckpt")))


def _refuse_if_taken(directory: Path, key: str) -> None:
    taken = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    if taken:
        shown = ", ".join(taken[:4]) + (", ..." if len(taken) > 4 else "")
        _refuse(f"{directory} already holds a run ({shown}); choose another directory with {key}=..."
                + (f", or continue it with resume={directory}" if key == "hydra.run.dir" else ""))


def _make_writable(directory: Path, key: str) -> None:
    """Create the directory and check that a file can be written there (read-only, a file on the
    way, no space), before Hydra writes into it."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        _refuse(f"cannot write the run directory {directory} ({error.strerror or error}); "
                f"choose another with {key}=... or GENEXP_LOG_DIR=...")


def _refuse(message: str) -> None:
    print(f"genexp: error: {message}", file=sys.stderr)
    sys.exit(2)


def mark_training_started() -> None:
    global _training_started
    _training_started = True


def discard_unstarted_run() -> bool:
    """Remove the directory of a single run refused before its first training step (it held
    nothing but this run's own records); True if it was removed."""
    if _claimed is None or _training_started or in_sweep():
        return False
    import logging
    import shutil

    for handler in logging.getLogger().handlers:  # Hydra's cli.log is open in the run directory
        handler.close()
    run_dir, new_dirs = _claimed
    if new_dirs:  # created by this run, with any parents it needed
        shutil.rmtree(run_dir, ignore_errors=True)
        for parent in new_dirs[1:]:
            try:
                parent.rmdir()  # a parent that another run has written into since stays
            except OSError:
                break
    else:  # it existed empty before: empty again
        for child in run_dir.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    return True


def job_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def record_failure(error: BaseException) -> None:
    """metrics.json with status 'failed', the error and its traceback, in this job's directory."""
    if rejoins_run(job_dir()):
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
    with read_write(hydra_cfg.run):
        hydra_cfg.run.dir = str(job_dir())


def short_dirname(override_dirname: str, limit: int = 160) -> str:
    """A sweep job's directory name from its overrides, cut to stay within file system limits
    (255 bytes a name); a cut name ends in a hash of the whole, so it stays unique."""
    if len(override_dirname.encode()) <= limit:
        return override_dirname
    digest = hashlib.sha1(override_dirname.encode()).hexdigest()[:8]
    return f"{override_dirname.encode()[:limit - 9].decode(errors='ignore')}~{digest}"


def run_overrides() -> list[str]:
    """The command line's overrides of this run (none outside a Hydra job, as in tests)."""
    if not HydraConfig.initialized():
        return []
    return [o for o in HydraConfig.get().overrides.task if not o.startswith(("hydra.", "resume="))]


def run_choices(cfg: DictConfig) -> tuple[str, str]:
    """The model and data options of a run (`model=dcgan` -> 'dcgan'); outside a Hydra job, the
    class names of their targets."""
    if HydraConfig.initialized() and not cfg.get("resume"):  # a resumed run's choices are its saved ones
        choices = HydraConfig.get().runtime.choices
        if choices.get("model") and choices.get("data"):
            return choices.model, choices.data
    return tuple(str(cfg[group].get("_target_", group)).rsplit(".", 1)[-1] for group in ("model", "data"))
