"""Config-only commands answer without importing torch, and the composed config is complete."""

import subprocess
import sys

import pytest

from conftest import REPO

PROBE = """
import runpy, sys
sys.argv = ["genexp", *sys.argv[1:]]
try:
    runpy.run_module("genexp", run_name="__main__")
except SystemExit as exit:
    assert not exit.code, exit.code
heavy = sorted(m for m in ("torch", "lightning", "torchvision") if m in sys.modules)
print("HEAVY_IMPORTS=" + ",".join(heavy))
"""


@pytest.mark.parametrize("args", [["--cfg", "job"], ["--help"], ["--info"], ["--cfg", "job", "model=vae", "data=mnist"]])
def test_config_only_commands_do_not_import_torch(args):
    result = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "HEAVY_IMPORTS=\n" in result.stdout, result.stdout[-500:]


def test_cfg_job_shows_the_composed_groups():
    result = subprocess.run([sys.executable, "-m", "genexp", "--cfg", "job", "--resolve"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for group in ("model:", "data:", "optimizer:", "lr_scheduler:", "trainer:", "logger:", "callbacks:", "paths:"):
        assert f"\n{group}" in "\n" + result.stdout
    # Models are sized from the data by interpolation; resolved, the shape is concrete.
    assert "shape:\n  - 1\n  - 16\n  - 16" in result.stdout


def test_help_lists_config_groups():
    result = subprocess.run([sys.executable, "-m", "genexp", "--help"], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0
    for group in ("model:", "data:", "optimizer:", "experiment:", "debug:"):
        assert group in result.stdout
