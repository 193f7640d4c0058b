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
    except GenexpError as error:
        print(f"genexp: error: {error}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    _train()


if __name__ == "__main__":
    main()
