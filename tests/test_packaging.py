"""The config tree travels with an installed wheel; win_env.yml agrees with pyproject.toml and
gives Windows users a CUDA build of torch."""

import os
import re
import subprocess
import sys
import tomllib

import yaml
from packaging.requirements import Requirement  # a dependency of pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from conftest import REPO

CUDA_PINNED = ("torch", "torchvision")  # exact CUDA builds in win_env.yml, bounds in pyproject.toml


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _win_env() -> tuple[dict, list[str]]:
    """win_env.yml and its pip list."""
    env = yaml.safe_load((REPO / "win_env.yml").read_text())
    return env, next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))


def _pinned_version(requirement: str) -> Version:
    """The version of an exact pin `name==version`; fails on any other requirement."""
    specifiers = list(Requirement(requirement).specifier)
    assert len(specifiers) == 1 and specifiers[0].operator == "==", f"{requirement} is not an exact pin"
    return Version(specifiers[0].version)


def test_win_env_installs_the_same_packages_as_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {_name(r): r.replace(" ", "") for r in project["dependencies"] + project["optional-dependencies"]["dev"]
              if _name(r) != "hatchling"}
    env, pip = _win_env()
    assert "prefix" not in env and "conda-forge" in env["channels"]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert "python=3.11" in conda and "pip" in conda
    assert pip[0].startswith("--extra-index-url https://download.pytorch.org/whl/cu")
    listed = {_name(r): r.replace(" ", "") for r in pip[1:]}
    assert listed.keys() == wanted.keys()  # same names
    for name in CUDA_PINNED:  # an exact CUDA build within pyproject's bounds
        version = _pinned_version(listed[name])
        assert version.local and version.local.startswith("cu"), listed[name]
        assert SpecifierSet(str(Requirement(wanted[name]).specifier)).contains(version), (listed[name], wanted[name])
    assert {k: v for k, v in listed.items() if k not in CUDA_PINNED} == \
        {k: v for k, v in wanted.items() if k not in CUDA_PINNED}  # the others: same version bounds


def test_win_env_pins_one_cuda_build_of_torch_and_the_torchvision_it_needs():
    # Open bounds (torch>=2.2) let pip take PyPI's newest torch, CPU-only on Windows, over the
    # CUDA index: both must be exact pins of a +cuNNN build, from the index of that same label.
    _, pip = _win_env()
    index = re.fullmatch(r"--extra-index-url https://download\.pytorch\.org/whl/(cu\d{3})/?", pip[0])
    assert index, pip[0]
    listed = {_name(r): r for r in pip[1:]}
    torch, vision = (_pinned_version(listed[name]) for name in CUDA_PINNED)
    assert re.fullmatch(r"cu\d{3}", torch.local or ""), listed["torch"]
    assert vision.local == torch.local == index.group(1)  # one CUDA build, and its index
    # torch 2.m.p goes with torchvision 0.(m + 15).p (2.6.0 and 0.21.0, 2.14.1 and 0.29.1).
    major, minor, patch = torch.release
    assert major == 2 and vision.release == (0, minor + 15, patch), (str(torch), str(vision))


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
