"""Each optimizer, lr_scheduler, trainer and debug config builds what it promises."""

import inspect

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose_config, group_options
from genexp.validate import validate_config


def build_model(tmp_path, *overrides):
    from hydra.utils import instantiate

    cfg = compose_config(list(overrides), tmp_path)
    validate_config(cfg)
    return instantiate(cfg.model, _recursive_=False, _convert_="all",
                       optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
                       lr_scheduler=OmegaConf.to_container(cfg.lr_scheduler, resolve=True)), cfg


EXPECTED_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
                       "rmsprop": torch.optim.RMSprop, "adam_dcgan": torch.optim.Adam, "adam_wgan_gp": torch.optim.Adam,
                       "adam_gan_2d": torch.optim.Adam, "adamw_diffusion": torch.optim.AdamW}


def test_required_options_exist():
    assert set(EXPECTED_OPTIMIZERS) <= set(group_options("optimizer"))
    assert {"none", "cosine", "step"} <= set(group_options("lr_scheduler"))
    assert {"default", "cpu", "gpu", "ddp"} <= set(group_options("trainer"))


@pytest.mark.parametrize("name", group_options("optimizer"))
def test_optimizer_configs(name, tmp_path):
    model, cfg = build_model(tmp_path, f"optimizer={name}", "optimizer.lr=0.0123")
    optimizer = model.configure_optimizers()
    assert type(optimizer) is EXPECTED_OPTIMIZERS[name]
    assert optimizer.param_groups[0]["lr"] == 0.0123


@pytest.mark.parametrize("name", group_options("lr_scheduler"))
def test_scheduler_configs(name, tmp_path):
    model, cfg = build_model(tmp_path, f"lr_scheduler={name}", "trainer.max_epochs=7")
    configured = model.configure_optimizers()
    if name == "none":
        assert isinstance(configured, torch.optim.Optimizer)
        return
    scheduler = configured["lr_scheduler"]["scheduler"]
    assert isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler)
    if name == "cosine":
        assert scheduler.T_max == 7  # follows trainer.max_epochs


@pytest.mark.parametrize("name", group_options("trainer"))
def test_trainer_configs_are_trainer_arguments(name, tmp_path):
    cfg = compose_config([f"trainer={name}", "trainer.precision=bf16-mixed"], tmp_path)
    accepted = set(inspect.signature(L.Trainer.__init__).parameters)
    assert set(cfg.trainer) <= accepted, set(cfg.trainer) - accepted
    assert cfg.trainer.precision == "bf16-mixed"


@pytest.mark.parametrize("name", group_options("debug"))
def test_debug_configs_change_the_trainer(name, tmp_path):
    plain = compose_config([], tmp_path).trainer
    debug = compose_config([f"debug={name}"], tmp_path).trainer
    assert debug != plain
    assert set(debug) <= set(inspect.signature(L.Trainer.__init__).parameters)


@pytest.mark.parametrize("name", group_options("experiment"))
def test_experiments_compose_and_validate(name, tmp_path):
    cfg = compose_config([f"experiment={name}"], tmp_path)
    validate_config(cfg)
