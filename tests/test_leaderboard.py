"""The leaderboard: its plan covers every family, its tables and checks read real run records, and
the quick mode fills every row and column from real runs."""

import argparse
import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from genexp import leaderboard
from genexp.data.toy2d import DISTRIBUTIONS
from genexp.leaderboard import DENSITY_MODELS, IMAGE_MODELS, QUICK_TOY_SETS, TOY_SETS, Job


def namespace(tmp_path: Path, **changes) -> argparse.Namespace:
    values = {"budget": "00:00:01:00", "budget_2d": "00:00:00:12", "seeds": [0, 1, 2], "quick": False,
              "n_fake": 1000, "runs": tmp_path / "runs", "lanes": 1}
    return argparse.Namespace(**values | changes)


def test_the_plan_has_every_model_on_its_data_for_every_seed(tmp_path):
    jobs = leaderboard.plan(namespace(tmp_path))
    assert len(jobs) == 3 * (len(IMAGE_MODELS) + len(DENSITY_MODELS) * len(TOY_SETS))
    images = {(j.model, j.seed) for j in jobs if j.table == "images"}
    assert images == {(m, s) for m in IMAGE_MODELS for s in (0, 1, 2)}
    density = {(j.model, j.data, j.seed) for j in jobs if j.table == "2d"}
    assert density == {(m, d, s) for m in DENSITY_MODELS for d in TOY_SETS for s in (0, 1, 2)}
    # The same budget for every run of a table, and no epoch limit beside it.
    for job in jobs:
        budget = "00:00:01:00" if job.table == "images" else "00:00:00:12"
        assert f"+trainer.max_time={budget}" in job.train and "trainer.max_epochs=-1" in job.train
        assert f"seed={job.seed}" in job.train and f"model={job.model}" in job.train
    assert len({j.run_dir for j in jobs}) == len(jobs)  # one directory per run


def test_every_toy_set_has_the_density_its_gap_needs():
    assert all(DISTRIBUTIONS[name].log_prob is not None for name in TOY_SETS)
    assert set(TOY_SETS) == set(DISTRIBUTIONS) and set(QUICK_TOY_SETS) < set(TOY_SETS)


def test_a_missing_or_nan_figure_stops_the_leaderboard(tmp_path):
    good = Job("2d", "gmm", "moons", 0, tmp_path / "a", [], 10, {"gap": 0.01})
    leaderboard.check_complete([good])
    bad = Job("2d", "maf", "moons", 1, tmp_path / "b", [], 10, {"gap": math.nan})
    with pytest.raises(RuntimeError, match="maf on moons, seed 1: gap"):
        leaderboard.check_complete([good, bad])


def test_mean_and_std_over_seeds():
    assert leaderboard.mean_std([1.0, 2.0, 3.0], 2) == "2.00 ± 1.00"
    assert leaderboard.mean_std([None, None], 2) == "n/a"
    assert leaderboard.seconds("01:02:03:04") == ((24 + 2) * 60 + 3) * 60 + 4


def run_leaderboard(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "genexp.leaderboard", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)


def test_runs_of_an_earlier_leaderboard_are_not_overwritten(tmp_path):
    runs = tmp_path / "runs"
    (runs / "images").mkdir(parents=True)
    (runs / "images" / "note.txt").write_text("earlier")
    finished = run_leaderboard("--quick", "--runs", str(runs), "--out", str(tmp_path / "lb"), cwd=tmp_path)
    assert finished.returncode == 2
    assert "--runs" in finished.stderr and "--resume" in finished.stderr
    assert (runs / "images" / "note.txt").read_text() == "earlier" and not (tmp_path / "lb.md").exists()


@pytest.mark.parametrize("flag, value", [("--budget", "1:00"), ("--budget-2d", "00:00:00:00")])
def test_a_malformed_budget_is_refused(tmp_path, flag, value):
    finished = run_leaderboard(flag, value, "--runs", str(tmp_path / "runs"), cwd=tmp_path)
    assert finished.returncode == 2 and flag in finished.stderr and "DD:HH:MM:SS" in finished.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_the_quick_leaderboard_fills_every_row_and_column(tmp_path):
    out = tmp_path / "lb" / "leaderboard"
    lanes = str(min(2, len(os.sched_getaffinity(0))))
    finished = run_leaderboard("--quick", "--lanes", lanes, "--runs", str(tmp_path / "runs"), "--out", str(out),
                               cwd=tmp_path)
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-2000:]
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    images = {r["model"]: r for r in rows if r["table"] == "images"}
    assert set(images) == set(IMAGE_MODELS)
    for row in images.values():
        for key in ("fid", "kid_mean", "precision", "recall", "parameters", "epochs"):
            assert math.isfinite(float(row[key])), (row["model"], key)
        assert int(row["parameters"]) > 0
        # bits/dim where the family has a likelihood, and said which kind; none for GANs and EBMs
        has_likelihood = row["model"] not in ("dcgan", "wgan_gp", "ebm")
        assert (row["bits_per_dim"] != "") == has_likelihood, row["model"]
        assert (row["bits_per_dim_kind"] == "no likelihood") != has_likelihood
    density = {(r["model"], r["data"]): r for r in rows if r["table"] == "2d"}
    assert set(density) == {(m, d) for m in DENSITY_MODELS for d in QUICK_TOY_SETS}
    assert all(math.isfinite(float(r["gap"])) for r in density.values())
    text = out.with_suffix(".md").read_text()
    table_rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert not any("nan" in line.lower() for line in table_rows)
    for model in IMAGE_MODELS + DENSITY_MODELS:
        assert f"| {model} |" in text
    assert "weights sha256" in text and "torch" in text and "Lightning" in text
    assert out.with_name("leaderboard_samples.png").stat().st_size > 0
