"""Launcher, search and logger configs compose into what their plugins expect (no jobs run)."""

import pytest
from hydra import compose, initialize_config_dir

from conftest import CONF, group_options


def compose_with_hydra(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("launcher, target, setting", [("parallel", "JoblibLauncher", ("n_jobs", 2)),
                                                       ("slurm_local", "LocalLauncher", ("cpus_per_task", 1)),
                                                       ("slurm", "SlurmLauncher", ("timeout_min", 240))])
def test_launcher_configs_extend_the_plugins(launcher, target, setting):
    cfg = compose_with_hydra([f"hydra/launcher={launcher}"])
    assert cfg.hydra.launcher._target_.endswith(target)
    assert cfg.hydra.launcher[setting[0]] == setting[1]


@pytest.mark.parametrize("search", group_options("hparams_search"))
def test_optuna_searches_return_a_metric_of_the_family(search):
    cfg = compose_with_hydra([f"hparams_search={search}"])
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper") and cfg.hydra.sweeper.params
    assert cfg.optimized_metric.startswith(("test/", "val/"))


def test_mlflow_logger_is_local():
    cfg = compose_with_hydra(["logger=mlflow"])
    assert cfg.logger.mlflow._target_ == "lightning.pytorch.loggers.MLFlowLogger"
    assert cfg.logger.mlflow.tracking_uri.startswith("sqlite:///")
