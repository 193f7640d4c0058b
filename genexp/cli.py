"""Command line: `python -m genexp [overrides]` or the `genexp` console script.

Only Hydra and OmegaConf are imported here; torch is imported when a run really starts,
so `--cfg job`, `--help` and `--info` answer at once.
"""

import sys

import hydra
from omegaconf import DictConfig

from genexp.config_dir import config_dir
from genexp.errors import GenexpError


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def _train(cfg: DictConfig) -> float | None:
    from genexp.validate import validate_config

    try:
        validate_config(cfg)
        from genexp.train import run  # the first torch import

        return run(cfg)
    except Exception as error:
        user_error = _find_user_error(error)
        if user_error is None:
            raise
        print(f"genexp: error: {user_error}", file=sys.stderr)
        sys.exit(2)


def _find_user_error(error: BaseException | None) -> GenexpError | None:
    """The GenexpError behind an exception, also when Hydra's instantiate wrapped it."""
    while error is not None and not isinstance(error, GenexpError):
        error = error.__cause__ or error.__context__
    return error


def main() -> None:
    _train()


if __name__ == "__main__":
    main()
