"""The config tree travels with an installed wheel; win_env.yml agrees with pyproject.toml."""

import os
import re
import subprocess
import sys
import tomllib

import yaml

from conftest import REPO


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_win_env_installs_the_same_packages_as_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {_name(r): r.replace(" ", "") for r in project["dependencies"] + project["optional-dependencies"]["dev"]
              if _name(r) != "hatchling"}
    env = yaml.safe_load((REPO / "win_env.yml").read_text())
    assert "prefix" not in env and "conda-forge" in env["channels"]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert "python=3.11" in conda and "pip" in conda
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip[0].startswith("--extra-index-url https://download.pytorch.org/whl/cu")
    listed = {_name(r): r.replace(" ", "") for r in pip[1:]}
    assert listed == wanted  # same names, same version bounds


def test_installed_wheel_finds_its_configs_from_another_directory(tmp_path):
    wheel_dir, site, elsewhere = tmp_path / "wheel", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheel_dir), str(REPO)], check=True, capture_output=True, timeout=300)
    wheel = next(wheel_dir.glob("genexp-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = "import genexp, sys; print(genexp.__file__); sys.argv=['genexp','--cfg','job','data=mnist']; " \
            "from genexp.cli import main; main()"
    result = subprocess.run([sys.executable, "-c", probe], cwd=elsewhere, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith(str(site))  # the installed copy, not the checkout
    assert "_target_: genexp.data.torchvision_mnist.MNISTDataModule" in result.stdout
    assert (site / "genexp" / "conf" / "config.yaml").is_file()
