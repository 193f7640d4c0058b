"""Runs survive faults: a killed run resumes to the weights it would have had, checkpoints are
never half-written, NaN losses and signals stop a run with its last good checkpoint kept, and a
broken or foreign checkpoint is refused with a clear message."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, compose_config, run_cli

# A tiny deterministic VAE, a checkpoint each epoch, no callbacks that draw from the global RNG.
RUN = ["print_config=false", "trainer.max_epochs=3",
        "trainer.limit_train_batches=4", "trainer.limit_val_batches=2", "trainer.deterministic=true",
        "trainer.enable_progress_bar=false", "logger=none", "test=false", "seed=7",
        *(f"callbacks.{name}=null" for name in (
            "sample_grid", "reconstructions", "progress_bar", "latent_interpolation", "latent_traversal",
            "latent_scatter", "latent_projector", "latent_arithmetic", "density_2d", "sampling_chain"))]
TINY = [*RUN, "model.encoder.hidden_dims=[32]", "model.latent_dim=2"]
PAUSE = ["+callbacks.pause._target_=fault_injection.PauseAfterFirstEpoch", "+callbacks.pause.seconds=60"]
ENV = {"PYTHONPATH": f"{REPO / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def weights(checkpoint):
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]


# A small diffusion model: its EMA, optimizer state and random times and noise must all resume.
DIFFUSION = [*RUN, "model=ddpm", "data.image_size=8", "model.denoiser.widths=[16,32]", "model.denoiser.groups=4",
             "model.denoiser.attention_resolutions=[]", "model.schedule.steps=100", "model.sampler.steps=5",
             "model.preview_steps=2"]
FAMILIES = {"vae": TINY, "ddpm": DIFFUSION}


def start_paused_run(run_dir, overrides=TINY):
    """A run held at the start of its second epoch, once its first last.ckpt is on disk."""
    process = subprocess.Popen([sys.executable, "-m", "genexp", *overrides, *PAUSE, f"hydra.run.dir={run_dir}"],
                               cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1", **ENV},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoints" / "last.ckpt").exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.05)
    return process


def uninterrupted_run(run_dir, overrides):
    result = run_cli([*overrides, f"hydra.run.dir={run_dir}"], env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return uninterrupted_run(tmp_path_factory.mktemp("uninterrupted"), TINY)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_killed_run_resumes_to_the_uninterrupted_weights(family, uninterrupted, tmp_path):
    if family != "vae":
        uninterrupted = uninterrupted_run(tmp_path / "uninterrupted", FAMILIES[family])
    run_dir = tmp_path / "run"
    process = start_paused_run(run_dir, FAMILIES[family])
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()
    assert not (run_dir / "metrics.json").exists()
    assert weights(run_dir / "checkpoints" / "last.ckpt").keys() == weights(uninterrupted / "checkpoints" / "last.ckpt").keys()

    resumed = run_cli([f"resume={run_dir}"], env=ENV)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"
    expected, got = weights(uninterrupted / "checkpoints" / "last.ckpt"), weights(run_dir / "checkpoints" / "last.ckpt")
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


def test_resume_refuses_other_overrides_and_keeps_the_record(uninterrupted):
    before = (uninterrupted / "metrics.json").read_text()
    result = run_cli([f"resume={uninterrupted}", "optimizer.lr=0.5"], env=ENV)
    assert result.returncode == 2
    assert "genexp: error: optimizer.lr: a resumed run keeps its saved config" in result.stderr
    assert "trainer.max_epochs" in result.stderr
    assert (uninterrupted / "metrics.json").read_text() == before


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_saves_a_checkpoint_and_the_run_resumes(signum, tmp_path):
    run_dir = tmp_path / "run"
    process = start_paused_run(run_dir)
    os.kill(process.pid, signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, stderr[-3000:]
    assert f"{signum.name} stopped the run" in stderr and f"resume={run_dir}" in stderr
    assert "Traceback" not in stderr
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "interrupted" and record["signal"] == signum.name
    assert weights(run_dir / "checkpoints" / "last.ckpt")

    resumed = run_cli([f"resume={run_dir}"], env=ENV)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed" and record["epochs"] == 3


def test_a_nan_loss_names_loss_and_step_and_keeps_the_last_good_checkpoint(tmp_path):
    result = run_cli([*TINY, "+callbacks.poison._target_=fault_injection.PoisonWeightsAfterFirstEpoch",
                      f"hydra.run.dir={tmp_path}"], env=ENV)
    assert result.returncode == 2
    assert "genexp: error: train/loss is nan at step 5 (epoch 1)" in result.stderr, result.stderr[-3000:]
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "failed"
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 0 and all(w.isfinite().all() for w in last["state_dict"].values())


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    from genexp.checkpoint_io import AtomicCheckpointIO
    from genexp.errors import CheckpointError

    path, io = tmp_path / "last.ckpt", AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)

    def killed_mid_write(obj, file, *args, **kwargs):
        file.write(b"PK\x03\x04 half a zip")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", killed_mid_write)
    with pytest.raises(CheckpointError, match="No space left on device"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    assert torch.equal(weights(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def another_models_checkpoint(tmp_path):
    from genexp.train import instantiate_data_and_model

    _, model = instantiate_data_and_model(compose_config(["model=autoencoder"], tmp_path))
    torch.save({"state_dict": model.state_dict()}, tmp_path / "other.ckpt")
    return (tmp_path / "other.ckpt").read_bytes()


@pytest.mark.parametrize("content", ["not_a_checkpoint", "another_model"])
def test_a_bad_checkpoint_is_refused_by_resume_and_evaluate(content, uninterrupted, tmp_path):
    run_dir = shutil.copytree(uninterrupted, tmp_path / "run")
    bad = b"not a checkpoint" if content == "not_a_checkpoint" else another_models_checkpoint(tmp_path)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(bad)
    files = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    expected = "is not a readable checkpoint" if content == "not_a_checkpoint" else "weights of another model"

    resumed = run_cli([f"resume={run_dir}", "trainer.max_epochs=4"], env=ENV)
    evaluated = subprocess.run([sys.executable, "-m", "genexp.evaluate", f"run={run_dir / 'checkpoints' / 'last.ckpt'}"],
                               cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    for result in (resumed, evaluated):
        assert result.returncode == 2, result.stderr[-3000:]
        assert expected in result.stderr and "last.ckpt" in result.stderr
        assert "Traceback" not in result.stderr
    log = run_dir / "cli.log"  # the log only grows
    assert log.read_bytes().startswith(files.pop(log))
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p != log} == files


@pytest.mark.parametrize("where", ["run", "sweep"])
def test_an_output_directory_that_cannot_be_written_is_refused(where, tmp_path):
    # A file where a directory should be: the same refusal as a read-only directory (which a
    # test running as root could still write).
    blocked = tmp_path / "blocked"
    blocked.write_text("a file")
    args = [f"hydra.run.dir={blocked / 'run'}"] if where == "run" else ["-m", f"hydra.sweep.dir={blocked / 'sweep'}"]
    result = run_cli([*args, *TINY], env=ENV)
    assert result.returncode == 2
    assert f"genexp: error: cannot write the run directory {blocked}" in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert blocked.read_text() == "a file"
