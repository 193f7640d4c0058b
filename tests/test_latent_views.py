"""The latent-space views on tiny runs: each writes what it promises (PNG grids of the right
layout, the scatter, TensorBoard images and projector files), models without `encode` are
skipped, and latent arithmetic also runs from its command on a finished run."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import compose_config
from genexp import latent_arithmetic
from genexp.callbacks.interpolation import lerp, slerp
from genexp.callbacks.latent_scatter import LatentScatter
from genexp.saved_run import SavedRun
from genexp.train import run

SIDE = 8  # digits at their native size; grids enlarge them 4x (MIN_DISPLAY_SIDE = 32)
CELL = 4 * SIDE + 2  # an enlarged image and its grid padding
TINY = ["data=digits", f"data.image_size={SIDE}", "data.batch_size=64", "model.hidden_dims=[32]",
        "trainer.max_epochs=2", "trainer.limit_train_batches=4", "trainer.enable_progress_bar=false",
        "+trainer.enable_model_summary=false", "trainer.num_sanity_val_steps=0"]


def tiny_run(run_dir: Path, *overrides: str) -> Path:
    cfg = compose_config([*TINY, *overrides], run_dir)
    run(cfg)
    # The config Hydra saves beside a run, so that the run can be reopened.
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml", resolve=True)
    return run_dir


def grid_cells(path: Path) -> tuple[int, int]:
    """(columns, rows) of an image grid written by genexp.callbacks.images."""
    width, height = Image.open(path).size
    return (width - 2) // CELL, (height - 2) // CELL


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("vae") / "run", "model=vae", "model.latent_dim=3", "model.iwae_samples=4",
                    "callbacks.latent_scatter.every_n_epochs=1", "callbacks.latent_traversal.max_dims=2")


def test_interpolations_traversals_scatter_and_arithmetic_are_written(vae_run):
    for mode in ("linear", "spherical"):
        assert grid_cells(vae_run / "latent_interpolation" / mode / "test.png") == (8 + 2, 4)
    assert grid_cells(vae_run / "latent_traversal" / "test.png") == (9, 2)  # steps x max_dims
    assert grid_cells(vae_run / "latent_arithmetic" / "test_0_to_1.png") == (1 + 5, 8)  # example + alphas
    # The scatter: after testing, and on the validation split every epoch when asked.
    for name in ("test.png", "epoch_0000.png", "epoch_0001.png"):
        assert Image.open(vae_run / "latent_scatter" / name).size == (600, 500)


def test_tensorboard_holds_the_views_and_a_projector_embedding(vae_run):
    events = EventAccumulator(str(vae_run / "tensorboard"), size_guidance={"images": 0}).Reload()
    assert {"latent_interpolation/linear", "latent_interpolation/spherical", "latent_traversal",
            "latent_scatter", "latent_arithmetic"} <= set(events.Tags()["images"])
    config = (vae_run / "tensorboard" / "projector_config.pbtxt").read_text()
    assert "latent_projector/test" in config and "sprite" in config
    embedding = next((vae_run / "tensorboard").glob("*/latent_projector*"))
    tensors = (embedding / "tensors.tsv").read_text().splitlines()
    labels = (embedding / "metadata.tsv").read_text().splitlines()
    assert len(tensors) == len(labels) == 180 and len(tensors[0].split("\t")) == 3  # test digits, latent_dim
    assert set(labels) == {str(d) for d in range(10)}
    assert (embedding / "sprite.png").is_file()


def test_test_metrics_include_the_bounds_in_nats_and_bits(vae_run):
    metrics = json.loads((vae_run / "metrics.json").read_text())["metrics"]
    for key in ("test/elbo", "test/recon", "test/kl", "test/nll_iwae", "test/nll_iwae_bits_per_dim",
                "test/neg_elbo_bits_per_dim"):
        assert key in metrics, key
    assert metrics["test/nll_iwae"] <= -metrics["test/elbo"] + 1.0  # a single-sample ELBO is noisy
    assert metrics["test/nll_iwae_bits_per_dim"] == pytest.approx(metrics["test/nll_iwae"] / (64 * 0.6931), rel=1e-3)


def test_latent_arithmetic_command_on_a_finished_run(vae_run, tmp_path, capsys):
    latent_arithmetic.main([f"run={vae_run}", "source=3", "target=8", "alphas=[0,1,2]", "n_images=4",
                            f"out={tmp_path / 'a.png'}"])
    assert str(tmp_path / "a.png") in capsys.readouterr().out
    assert grid_cells(tmp_path / "a.png") == (1 + 3, 4)
    latent_arithmetic.main([f"run={vae_run / 'checkpoints' / 'last.ckpt'}", "source=1", "target=7"])
    assert grid_cells(vae_run / "latent_arithmetic" / "test_1_to_7.png") == (1 + 5, 8)
    with pytest.raises(SystemExit) as refused:
        latent_arithmetic.main([f"run={vae_run}", "source=42"])
    assert refused.value.code == 2 and "source=42" in capsys.readouterr().err


def test_a_saved_run_reopens_with_its_weights(vae_run):
    saved = SavedRun.open(vae_run)
    datamodule, model = saved.build()
    state = torch.load(saved.checkpoint, weights_only=True)["state_dict"]
    assert torch.equal(model.state_dict()["decoder.net.0.weight"], state["decoder.net.0.weight"])
    assert model.encode(datamodule.example_batch("test", 4)[0]).shape == (4, 3)


def test_autoencoder_with_a_2d_code_scatters_the_codes_themselves(tmp_path):
    run_dir = tiny_run(tmp_path / "run", "model=autoencoder", "logger=none")
    assert (run_dir / "latent_scatter" / "test.png").is_file()
    assert grid_cells(run_dir / "latent_traversal" / "test.png") == (9, 2)  # both dimensions
    assert not (run_dir / "tensorboard").exists()  # the projector needs TensorBoard: skipped


def test_conditional_vae_reconstructs_and_samples_per_class(tmp_path):
    run_dir = tiny_run(tmp_path / "run", "model=cvae", "model.latent_dim=2", "logger=none")
    assert grid_cells(run_dir / "samples" / "final.png") == (6, 10)  # 64 // 10 per class, a row per class
    assert grid_cells(run_dir / "reconstructions" / "epoch_0001.png") == (16, 2)
    assert grid_cells(run_dir / "latent_interpolation" / "linear" / "test.png") == (10, 4)


def test_views_skip_models_without_encode():
    trainer = SimpleNamespace(is_global_zero=True, datamodule=SimpleNamespace(example_batch=None, to_images=None))
    assert not LatentScatter().applies(trainer, SimpleNamespace(decode=None))
    assert LatentScatter().applies(trainer, SimpleNamespace(encode=None, decode=None))


def test_spherical_interpolation_follows_the_great_circle():
    a, b = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    t = torch.linspace(0, 1, 5)
    path = slerp(a, b, t)[0]
    assert torch.allclose(path[0], a[0]) and torch.allclose(path[-1], b[0], atol=1e-6)
    assert torch.allclose(path.norm(dim=1), torch.full((5,), 2.0))
    assert torch.allclose(lerp(a, b, t)[0, 2], torch.tensor([1.0, 1.0]))
    assert torch.allclose(slerp(a, a, t)[0], a.expand(5, 2))  # parallel codes: no division by zero
