"""Bad input fails before training, names the key and what is allowed, exits non-zero,
and never touches another run's directory."""

import json

import pytest

from conftest import run_cli

CASES = {
    # Hydra's own checks: unknown option of a group, unknown key.
    "unknown_group_option": (["model=nope"], "model=nope is not an option of model", "vae"),
    "mistyped_group_option": (["model=dcgann"], "did you mean model=dcgan?"),
    "unknown_key": (["model.nope=1"], "model.nope", "not in struct"),
    # genexp's checks: type and range.
    "wrong_type": (["optimizer.lr=abc"], "optimizer.lr='abc'", "a number > 0"),
    "lr_zero": (["optimizer.lr=0"], "optimizer.lr=0", "a number > 0"),
    "batch_size_zero": (["data.batch_size=0"], "data.batch_size=0", "an integer >= 1"),
    "latent_dim_zero": (["model.latent_dim=0"], "model.latent_dim=0", "an integer >= 1"),
    "hidden_dims_not_list": (["model.encoder.hidden_dims=12"], "model.encoder.hidden_dims=12", "non-empty list"),
    "precision": (["trainer.precision=7"], "trainer.precision=7", "bf16-mixed"),
    "image_size_net_cannot_take": (["model/encoder=conv", "model/decoder=conv", "data.image_size=10"],
                                   "data.image_size=10", "multiple of 4"),
    "unknown_encoder": (["model/encoder=rnn"], "model/encoder=rnn is not an option", "conv, mlp"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_refused_early(case, tmp_path):
    overrides, *expected = CASES[case]
    run_dir = tmp_path / "run"
    result = run_cli([*overrides, f"hydra.run.dir={run_dir}", "print_config=false"], timeout=120)
    assert result.returncode == 2  # Hydra's own refusals too, in the same voice
    assert result.stderr.startswith("genexp: error: ") and len(result.stderr.splitlines()) == 1, result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr[-2000:]
    assert not run_dir.exists()  # a single run refused before training leaves no directory


def test_missing_mnist_names_the_path_and_the_fix(tmp_path):
    result = run_cli(["data=mnist", f"data.root={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path / 'run'}"],
                     timeout=120)
    assert result.returncode == 2
    assert f"{tmp_path / 'nowhere' / 'MNIST' / 'raw'}" in result.stderr
    assert "data.download=true" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_run_never_writes_into_another_runs_directory(tmp_path):
    run_dir = tmp_path / "run"
    first = run_cli(["trainer.max_epochs=1", f"hydra.run.dir={run_dir}", "print_config=false"])
    assert first.returncode == 0, first.stderr[-2000:]
    before = (run_dir / "metrics.json").read_text()
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())

    second = run_cli(["trainer.max_epochs=2", f"hydra.run.dir={run_dir}", "print_config=false"])
    assert second.returncode == 2
    assert "already holds a run" in second.stderr and str(run_dir) in second.stderr
    assert (run_dir / "metrics.json").read_text() == before
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == checkpoints
    assert json.loads(before)["epochs"] == 1
