"""Shared test helpers: compose configs in-process, run the CLI in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from genexp.config_dir import config_dir

REPO = Path(__file__).resolve().parents[1]
CONF = Path(config_dir())


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """The config `python -m genexp <overrides>` would run, writing into output_dir."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.print_config = False
    return cfg


def run_cli(args: list[str], cwd: Path | None = None, env: dict | None = None,
            timeout: int = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "genexp", *args], cwd=cwd or REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def group_options(group: str) -> list[str]:
    """The option names of a config group, from the files in conf/<group>/."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.fixture(autouse=True)
def _isolated_process_state():
    """One thread per test (tiny models only contend on small CPUs), and no distributed state
    left behind: Lightning's DDP setup writes MASTER_PORT & co. into os.environ, which later
    subprocesses would inherit and collide on."""
    import torch
    import torch.distributed as dist

    threads, environ = torch.get_num_threads(), dict(os.environ)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    os.environ.clear()
    os.environ.update(environ)


def mlp_nets(hidden_dims: list[int]) -> dict:
    """The encoder and decoder configs of an autoencoder with MLP nets (model/encoder=mlp)."""
    return {"encoder": {"_target_": "genexp.nets.mlp.MLPEncoder", "hidden_dims": list(hidden_dims)},
            "decoder": {"_target_": "genexp.nets.mlp.MLPDecoder", "hidden_dims": list(hidden_dims)}}
