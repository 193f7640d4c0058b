"""scripts/whole_run.py: its plain script trains what the genexp run trains, and an entry has the
shape of scripts/benchmark.py's entries."""

import importlib.util
import math
import sys

import pytest

from conftest import REPO, compose_config


def load(name: str, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


plain = load("plain_flow_2d", REPO / "scripts" / "plain" / "flow_2d.py")
whole_run = load("whole_run", REPO / "scripts" / "whole_run.py")


@pytest.mark.parametrize("net, data", [("realnvp", "moons"), ("nsf", "checkerboard")])
def test_plain_script_builds_the_configs_network_with_their_settings(net, data, tmp_path):
    cfg = compose_config([f"model={net}", f"data={data}"], tmp_path)
    density = {k: v for k, v in cfg.model.density.items() if k != "_target_"}
    module, name, kwargs = plain.NETS[net]
    assert f"{module}.{name}" == cfg.model.density._target_
    assert kwargs == density
    assert plain.BATCH_SIZE == cfg.data.batch_size
    assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.optimizer.weight_decay == 0
    assert (plain.LR, list(plain.BETAS)) == (cfg.optimizer.lr, list(cfg.optimizer.betas))


@pytest.mark.slow
def test_entry_times_both_runs_and_both_reach_a_similar_test_nll(tmp_path):
    entry = whole_run.whole_run("realnvp", "moons", epochs=1, repeats=1, work=tmp_path)
    assert {"genexp", "baseline", "ratio", "unit", "target", "met"} <= entry.keys()
    assert entry["genexp"] > 0 and entry["baseline"] > 0 and entry["unit"] == "s"
    assert entry["ratio"] == pytest.approx(entry["baseline"] / entry["genexp"])
    assert entry["met"] == (entry["ratio"] >= entry["target"])
    nll = entry["test_nll"]
    # The same network from the same seed on the same points: after one epoch the two agree closely.
    assert all(math.isfinite(v) for v in nll.values()) and abs(nll["genexp"] - nll["plain"]) < 0.2, nll
    assert (tmp_path / "realnvp_moons" / "plain_0" / "samples.png").is_file()
