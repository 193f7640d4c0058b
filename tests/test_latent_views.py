"""The latent-space views on tiny runs: each writes what it promises (PNG grids of the right
layout, the scatter, TensorBoard images and projector files), models without `encode` are
skipped, and latent arithmetic also runs from its command on a finished run. Traversals show
the dimensions of highest KL first, labelled, on stub models whose KL per dimension is known."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import compose_config
from genexp import latent_arithmetic
from genexp.callbacks import traversal
from genexp.images import evaluating
from genexp.callbacks.interpolation import lerp, slerp
from genexp.callbacks.latent_scatter import LatentScatter
from genexp.models.vae import gaussian_kl
from genexp.saved_run import SavedRun
from genexp.train import run

SIDE = 8  # digits at their native size; grids enlarge them 4x (MIN_DISPLAY_SIDE = 32)
CELL = 4 * SIDE + 2  # an enlarged image and its grid padding
TINY = ["data=digits", f"data.image_size={SIDE}", "data.batch_size=64", "model.encoder.hidden_dims=[32]",
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
    """(columns, rows) of an image grid written by genexp.images."""
    width, height = Image.open(path).size
    return (width - 2) // CELL, (height - 2) // CELL


def traversal_cells(path: Path) -> tuple[int, int, int]:
    """(label columns, image columns, rows) of a traversal grid: its first cells are white paper
    with a dark label beside each row, the others decoded digits on their dark background."""
    columns, rows = grid_cells(path)
    pixels = np.asarray(Image.open(path).convert("L"), dtype=float) / 255
    assert pixels.shape == (2 + rows * CELL, 2 + columns * CELL)  # whole cells, labels included
    paper = [min(pixels[2 + r * CELL:(r + 1) * CELL, 2 + c * CELL:(c + 1) * CELL].mean() for r in range(rows)) > 0.8
             for c in range(columns)]
    n_labels = paper.index(False)
    assert n_labels >= 1 and not any(paper[n_labels:])
    for r in range(rows):  # ink in every row's label
        assert (pixels[2 + r * CELL:(r + 1) * CELL, :n_labels * CELL] < 0.5).any(), f"row {r} has no label"
    return n_labels, columns - n_labels, rows


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("vae") / "run", "model=vae", "model.latent_dim=3", "model.iwae_samples=4",
                    "callbacks.latent_scatter.every_n_epochs=1", "callbacks.latent_traversal.max_dims=2",
                    # Barely trained (KL 0.06 nats in all): keep the dimensions under the default 0.01 nats.
                    "callbacks.latent_traversal.min_kl=0")


def test_interpolations_traversals_scatter_and_arithmetic_are_written(vae_run):
    for mode in ("linear", "spherical"):
        assert grid_cells(vae_run / "latent_interpolation" / mode / "test.png") == (8 + 2, 4)
    assert traversal_cells(vae_run / "latent_traversal" / "test.png")[1:] == (9, 2)  # steps x max_dims
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
    assert traversal_cells(run_dir / "latent_traversal" / "test.png")[1:] == (9, 2)  # both dimensions
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


# --- traversals: which dimensions, in which order, with which labels -------------------------

def swept_dims(z: torch.Tensor, n_steps: int) -> list[int | None]:
    """The dimension each row of decoded traversal codes (rows * steps, D) sweeps (None: none)."""
    varies = z.view(-1, n_steps, z.shape[1]).std(1) > 0
    return [int(row.nonzero()[0]) if row.any() else None for row in varies]


def spy_on_decode(model) -> list[torch.Tensor]:
    """Records the codes each call of model.decode receives."""
    seen, decode = [], model.decode

    def recording(z, *args, **kwargs):
        seen.append(z.detach().clone())
        return decode(z, *args, **kwargs)

    model.decode = recording
    return seen


class StubAutoEncoder(torch.nn.Module):
    """Codes mu_d(x) = SPREAD_d * s(x) + OFFSET_d, with s(x) = +-1 read from the first pixel: their
    standard deviation over the data is SPREAD, the ranking before KL was used."""

    SPREAD = torch.tensor([1.0, 0.1, 0.5, 0.01, 0.0])
    OFFSET = torch.tensor([0.0, 1.5, 0.0, 0.0, 0.0])
    device = torch.device("cpu")
    num_classes = None  # unconditional, as GenerativeModule declares it

    def encode(self, x, labels=None):
        return self.SPREAD * x[:, :1, 0, 0] + self.OFFSET

    def decode(self, z, labels=None):
        return 0.25 * torch.sigmoid(z.sum(1)).view(-1, 1, 1, 1).expand(-1, 1, SIDE, SIDE)  # dark images


class StubVAE(StubAutoEncoder):
    """With a posterior variance: KL_d = (SPREAD_d^2 + OFFSET_d^2 + exp(LOGVAR_d) - 1 - LOGVAR_d) / 2
    over the examples = 0.5, 1.13, 0.69, 5e-5, 0 nats, far from the order of SPREAD."""

    LOGVAR = torch.tensor([0.0, 0.0, -2.0, 0.0, 0.0])
    KL = 0.5 * (StubAutoEncoder.SPREAD ** 2 + StubAutoEncoder.OFFSET ** 2 + LOGVAR.exp() - 1 - LOGVAR)

    def posterior(self, x, labels=None):
        mu = self.encode(x)
        return mu, self.LOGVAR.expand_as(mu)


def stub_trainer(run_dir: Path) -> SimpleNamespace:
    signs = torch.tensor([1.0, -1.0]).repeat(50)  # s(x) of 100 examples, mean 0, variance 1

    def example_batch(split, n):
        x = torch.zeros(len(signs), 1, SIDE, SIDE)
        x[:, 0, 0, 0] = signs
        return x[:n], torch.zeros(min(n, len(x)), dtype=torch.long)

    datamodule = SimpleNamespace(example_batch=example_batch, to_images=lambda x: x)
    return SimpleNamespace(datamodule=datamodule, default_root_dir=str(run_dir), loggers=[], global_step=0)


def test_traversal_rows_are_the_dimensions_of_highest_kl_in_descending_order(tmp_path):
    model = StubVAE()
    assert StubVAE.KL.argsort(descending=True).tolist() == [1, 2, 0, 3, 4]
    decoded = spy_on_decode(model)
    traversal.LatentTraversal(max_dims=10).draw(stub_trainer(tmp_path), model, "test", "test")
    # Ranked by the spread of the codes it would be 0, 2, 1, 3, 4; dimensions 3 and 4 carry less
    # than min_kl = 0.01 nats and are left out.
    assert swept_dims(torch.cat(decoded), 9) == [1, 2, 0]
    assert traversal_cells(tmp_path / "latent_traversal" / "test.png")[1:] == (9, 3)


def test_traversal_labels_name_each_dimension_and_its_kl(tmp_path):
    model = StubVAE()
    codes = traversal.Codes(model, stub_trainer(tmp_path).datamodule, "val", 100)
    ranking = traversal.rank_dimensions(model, codes, max_dims=2, min_kl=0.01)
    assert torch.allclose(ranking.scores, StubVAE.KL[[1, 2]])
    assert ranking.labels() == ["z1  KL 1.13 nats", "z2  KL 0.69 nats"]
    everything = traversal.rank_dimensions(model, codes, max_dims=10, min_kl=0.0)
    assert everything.dims.tolist() == [1, 2, 0, 3, 4]  # min_kl=0 keeps the unused dimensions
    nothing = traversal.rank_dimensions(model, codes, max_dims=10, min_kl=100.0)
    assert nothing.dims.tolist() == [1]  # never an empty view: the most active dimension stays


def test_traversal_of_a_model_without_posterior_ranks_by_code_variance(tmp_path):
    model = StubAutoEncoder()
    decoded = spy_on_decode(model)
    traversal.LatentTraversal(max_dims=3).draw(stub_trainer(tmp_path), model, "test", "test")
    assert swept_dims(torch.cat(decoded), 9) == [0, 2, 1]
    codes = traversal.Codes(model, stub_trainer(tmp_path).datamodule, "val", 100)
    ranking = traversal.rank_dimensions(model, codes, max_dims=2, min_kl=0.01)
    assert ranking.labels() == ["z0  var 1.00", "z2  var 0.25"]  # says it is not a KL


def test_traversal_of_a_trained_vae_follows_its_kl_on_validation_data(vae_run, tmp_path):
    datamodule, model = SavedRun.open(vae_run).build()
    with evaluating(model):
        codes = traversal.Codes(model, datamodule, "val", 500)
        mu, logvar = model.posterior(codes.x)
        kl = traversal.dimension_kl(model, codes.x, codes.labels)
        assert kl.sum() == pytest.approx(gaussian_kl(mu, logvar).mean().item(), rel=1e-5)  # the VAE's KL term
        decoded = spy_on_decode(model)
        traversal.LatentTraversal(max_dims=3, min_kl=0.0).draw(
            SimpleNamespace(datamodule=datamodule, default_root_dir=str(tmp_path), loggers=[], global_step=0),
            model, "test", "test")
    rows = swept_dims(torch.cat(decoded), 9)
    assert rows == kl.argsort(descending=True).tolist()
    assert all(kl[a] >= kl[b] for a, b in zip(rows, rows[1:]))  # descending KL
    assert traversal_cells(tmp_path / "latent_traversal" / "test.png")[1:] == (9, 3)
