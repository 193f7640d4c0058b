"""Command line: `python -m genexp [overrides]` or the `genexp` console script.

Only Hydra and OmegaConf are imported here; torch is imported when a run really starts,
so `--cfg job`, `--help` and `--info` answer at once.
"""

import difflib
import os
import signal
import sys

import hydra
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf

from genexp import jobs
from genexp.config_dir import config_dir
from genexp.errors import PeerStopped, RunDirError, RunInterrupted, find_peer_stopped, find_user_error

# conf/hydra/default.yaml names sweep jobs with it.
OmegaConf.register_new_resolver("genexp.short_dirname", jobs.short_dirname, replace=True)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def _train(cfg: DictConfig) -> float | None:
    from genexp.validate import validate_config

    try:
        if cfg.resume:
            cfg = jobs.resumed_config(cfg)
        validate_config(cfg)
        with jobs.isolated_job():
            from genexp.train import run  # the first torch import

            return run(cfg)
    except RunInterrupted as stop:  # its checkpoint and metrics.json are written: a clean exit
        print(f"genexp: {stop}", file=sys.stderr)
        sys.exit(128 + signal.Signals[stop.signal_name])
    except Exception as error:
        user_error = find_user_error(error) or find_peer_stopped(error)
        if jobs.in_sweep():  # the job keeps its failure record; the other jobs of the sweep go on
            if not isinstance(user_error, RunDirError):  # never overwrite another run's record
                jobs.record_failure(error)
            print(f"genexp: job failed: {user_error or repr(error)} (recorded in {jobs.job_dir()})", file=sys.stderr)
            return jobs.failure_value()
        # A single run refused before training leaves no directory behind; a later failure its record.
        removed = jobs.discard_unstarted_run()
        if not removed and not isinstance(user_error, RunDirError):
            jobs.record_failure(error)
        if user_error is None:
            raise
        if isinstance(user_error, PeerStopped):
            print(f"genexp: error: {peer_stopped_message(user_error, cfg, removed)}", file=sys.stderr)
            sys.exit(1)
        print(f"genexp: error: {user_error}", file=sys.stderr)
        sys.exit(2)


def peer_stopped_message(error: PeerStopped, cfg: DictConfig, removed: bool) -> str:
    """One line: what stopped, the timeout key, and how to go on."""
    timeout = OmegaConf.select(cfg, "distributed.timeout_s")
    waited = f"distributed.timeout_s={timeout} s" if timeout is not None else "the process-group timeout"
    then = ("nothing was trained yet: start the run again" if removed else
            f"continue it with `python -m genexp resume={jobs.job_dir()}` on every node, started as before")
    return f"a peer process of this distributed run stopped or did not answer within {waited} ({error}); {then}"


def hydra_error_message(error: HydraException) -> str:
    """Hydra's message on one or two lines, with a guess for a mistyped option of a group."""
    message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    if isinstance(error, MissingConfigException) and error.options:
        group, _, option = (error.missing_cfg_file or "").rpartition("/")
        guess = difflib.get_close_matches(option, error.options, n=1)
        hint = f"did you mean {group}={guess[0]}? " if guess else ""
        return f"{group}={option} is not an option of {group}: {hint}the options are {', '.join(error.options)}"
    if error.__cause__ is not None:
        cause = str(error.__cause__).splitlines()[0]
        message = f"{message} ({cause})"
    return message


def main() -> None:
    try:
        sys.argv += jobs.resume_overrides(sys.argv[1:])
    except RunDirError as error:
        print(f"genexp: error: {error}", file=sys.stderr)
        sys.exit(2)
    # Hydra prints its own errors (composition, overrides) and exits 1; with HYDRA_FULL_ERROR it
    # raises them, so that they are reported here like every other error, unless the user asked
    # for Hydra's full traces.
    full_errors = "HYDRA_FULL_ERROR" in os.environ
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        _train()
    except HydraException as error:
        if full_errors:
            raise
        print(f"genexp: error: {hydra_error_message(error)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
