"""Command line: `python -m genexp [overrides]` or the `genexp` console script.

Only Hydra and OmegaConf are imported here; torch is imported when a run really starts,
so `--cfg job`, `--help` and `--info` answer at once.
"""

import signal
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from genexp import jobs
from genexp.config_dir import config_dir
from genexp.errors import RunDirError, RunInterrupted, find_user_error

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
        user_error = find_user_error(error)
        if not isinstance(user_error, RunDirError):  # never overwrite another run's record
            jobs.record_failure(error)
        if jobs.in_sweep():  # the other jobs of the sweep go on
            print(f"genexp: job failed: {user_error or repr(error)} (recorded in {jobs.job_dir()})", file=sys.stderr)
            return jobs.failure_value()
        if user_error is None:
            raise
        print(f"genexp: error: {user_error}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    try:
        sys.argv += jobs.resume_overrides(sys.argv[1:])
    except RunDirError as error:
        print(f"genexp: error: {error}", file=sys.stderr)
        sys.exit(2)
    _train()


if __name__ == "__main__":
    main()
