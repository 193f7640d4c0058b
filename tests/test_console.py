"""What a run prints: its model, data, directory and overrides first, its headline metrics and
files last, the whole config only on request and uncut, and no library chatter."""

import json

from conftest import run_cli

TINY = ["model.encoder.hidden_dims=[32]", "trainer.max_epochs=1", "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "trainer.enable_progress_bar=false",
        "model.iwae_samples=2"]


def test_a_run_says_where_it_goes_and_what_it_gave(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli([*TINY, f"hydra.run.dir={run_dir}"])
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0] == f"genexp: vae on digits -> {run_dir}"
    assert lines[1] == f"  overrides: {' '.join(TINY)}"
    assert "_target_" not in result.stdout  # no config tree by default
    for chatter in ("Tip:", "litlogger", "litmodels", "LeafSpec", "Seed set to"):
        assert chatter not in result.stdout + result.stderr, chatter

    record = json.loads((run_dir / "metrics.json").read_text())
    end = lines[lines.index(next(line for line in lines if line.startswith("genexp: completed"))):]
    assert end[0].startswith(f"genexp: completed in ") and f"{record['epochs']} epochs (32-true on cpu)" in end[0]
    shown = dict(line.split(maxsplit=1) for line in end[1:])
    assert float(shown["test/nll_iwae"]) == float(f"{record['metrics']['test/nll_iwae']:.6g}")
    assert shown["metrics"] == str(run_dir / "metrics.json")
    assert shown["samples"] == str(run_dir / "samples" / "final.png") and (run_dir / "samples" / "final.png").is_file()


def test_print_config_shows_the_whole_config_without_cutting_long_values(tmp_path):
    run_dir = tmp_path / ("a_directory_name_long_enough_to_pass_the_edge_of_an_80_column_terminal" * 2) / "run"
    result = run_cli([*TINY, "print_config=true", f"hydra.run.dir={run_dir}"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"  output_dir: {run_dir}" in result.stdout.splitlines()
    assert "latent_dim: 16" in result.stdout and "_target_: genexp.models.vae.VAE" in result.stdout


def test_openmp_threads_wait_passively_unless_the_user_chose(tmp_path):
    import os
    import subprocess
    import sys

    probe = "import genexp, os, torch; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    chosen = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert chosen.stdout.strip() == "PASSIVE"
    kept = subprocess.run([sys.executable, "-c", probe], env=env | {"OMP_WAIT_POLICY": "ACTIVE"},
                          capture_output=True, text=True, check=True)
    assert kept.stdout.strip() == "ACTIVE"
