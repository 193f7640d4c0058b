"""Cheap previews while training (GenerativeModule.preview), the full sampler for the final views:
the training-time callbacks draw from `preview` and final.png from `sample`, seen in their PNGs;
the 2D density view draws on the epochs its schedule says, always the last, and keeps its three
panels."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import compose_config
from genexp.callbacks.density2d import Density2D
from genexp.metrics.sample_quality import draw_images
from genexp.models.base import GenerativeModule
from genexp.train import run
from genexp.validate import validate_config

ADAM = {"_target_": "torch.optim.Adam", "lr": 1e-3}
OFF_PANEL = 1e3  # far outside the density view's extent: such samples leave no mark on it


class Stub(GenerativeModule):
    """Samples standard normal vectors; its preview is all zeros."""

    def sample(self, n, labels=None, generator=None):
        return torch.randn(n, 2, generator=generator)


def record_previews(monkeypatch, fill: float) -> list[int]:
    """Every model's preview becomes its samples' shape filled with `fill`; returns the epochs it was called in."""
    epochs = []

    def preview(self, n, labels=None, generator=None):
        epochs.append(self.trainer.current_epoch)
        return torch.full_like(self.sample(n, labels, generator), fill)

    monkeypatch.setattr(GenerativeModule, "preview", preview)
    return epochs


def train(tmp_path, overrides):
    cfg = compose_config([*overrides, "trainer.enable_progress_bar=false", "test=false"], tmp_path / "run")
    validate_config(cfg)
    run(cfg)
    return tmp_path / "run"


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def test_preview_defaults_to_sample():
    model = Stub(optimizer=ADAM)
    torch.testing.assert_close(model.preview(5, generator=torch.Generator().manual_seed(3)),
                               model.sample(5, generator=torch.Generator().manual_seed(3)))


def test_sample_quality_during_training_scores_previews():
    class PreviewOnly(Stub):
        num_classes = 3

        def sample(self, n, labels=None, generator=None):
            raise AssertionError("training-time scores draw previews")

        def preview(self, n, labels=None, generator=None):
            self.labels.append(labels)
            return torch.zeros(n, 1, 2, 2)

    model = PreviewOnly(optimizer=ADAM)
    model.labels = []
    images = draw_images(model, SimpleNamespace(to_images=lambda x: x + 0.5), n=7, seed=0, batch_size=4,
                         preview=True)
    assert images.shape == (7, 1, 2, 2) and bool((images == 0.5).all())
    assert [labels.tolist() for labels in model.labels] == [[0, 1, 2, 0], [1, 2, 0]]


def test_sample_grids_of_epochs_are_previews_and_the_final_grid_is_sampled(tmp_path, monkeypatch):
    epochs = record_previews(monkeypatch, fill=0.0)  # black digits
    run_dir = train(tmp_path, ["model=vae", "data=digits", "data.image_size=8", "model.encoder.hidden_dims=[32]",
                               "trainer.max_epochs=2", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
                               "logger=none", "callbacks.sample_grid.n_samples=16"])
    assert epochs == [0, 1]  # once per epoch, by the sample grid
    for name in ("epoch_0000.png", "epoch_0001.png"):
        assert set(np.unique(pixels(run_dir / "samples" / name))) == {0, 255}, name  # black images, white padding
    assert len(np.unique(pixels(run_dir / "samples" / "final.png"))) > 10  # decoded digits: grey levels


@pytest.mark.parametrize("max_epochs, every, drawn", [(12, 5, [4, 9, 11]), (10, 5, [4, 9]), (3, 5, [2]),
                                                      (4, 1, [0, 1, 2, 3])])
def test_density_view_schedule_draws_every_n_epochs_and_the_last(max_epochs, every, drawn):
    callback = Density2D(every_n_epochs=every)
    trainer = SimpleNamespace(max_epochs=max_epochs, max_steps=-1, global_step=0, should_stop=False)
    assert [e for e in range(max_epochs) if callback.draws_on(SimpleNamespace(**vars(trainer), current_epoch=e))] \
        == drawn


def test_density_view_stops_with_the_fit():
    callback = Density2D(every_n_epochs=5)
    by_steps = SimpleNamespace(max_epochs=None, max_steps=30, global_step=30, should_stop=False, current_epoch=1)
    stopped = SimpleNamespace(max_epochs=100, max_steps=-1, global_step=7, should_stop=True, current_epoch=1)
    going = SimpleNamespace(max_epochs=100, max_steps=-1, global_step=7, should_stop=False, current_epoch=1)
    assert callback.draws_on(by_steps) and callback.draws_on(stopped) and not callback.draws_on(going)


def panels(image: np.ndarray) -> list[np.ndarray]:
    """The axes of a figure, left to right, cut out between their black frames."""
    black = (image < 40).all(axis=2)
    frame_columns = np.flatnonzero(black.sum(axis=0) > image.shape[0] // 3)
    runs = np.split(frame_columns, np.flatnonzero(np.diff(frame_columns) > 1) + 1)
    lefts, rights = [r[-1] + 1 for r in runs[0::2]], [r[0] for r in runs[1::2]]
    rows = np.flatnonzero(black.sum(axis=1) > (rights[0] - lefts[0]) // 2)
    top, bottom = rows[0] + 2, rows[-1] - 1
    return [image[top:bottom, left:right] for left, right in zip(lefts, rights)]


def fraction(panel: np.ndarray, rgb, tolerance: int = 40) -> float:
    return float((np.abs(panel - np.array(rgb)).max(axis=2) <= tolerance).mean())


VIRIDIS_LOW, GREY, ORANGE, WHITE = (68, 1, 84), (153, 153, 153), (255, 127, 14), (255, 255, 255)


def test_density_view_default_schedule_previews_and_three_panels(tmp_path, monkeypatch):
    epochs = record_previews(monkeypatch, fill=OFF_PANEL)
    run_dir = train(tmp_path, ["model=gaussian", "data=moons", "data.n_train=512", "data.n_val=256",
                               "trainer.max_epochs=7", "logger=tensorboard"])
    assert epochs == [4, 6]  # every 5th epoch (the default) and the last
    assert {p.name for p in (run_dir / "density").iterdir()} == {"epoch_0004.png", "epoch_0006.png", "final.png"}
    # Every image written counts, whatever TensorBoard would purge as orphaned on display.
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0},
                              purge_orphaned_data=False).Reload()
    assert len(events.Images("density")) == 2

    for name in ("epoch_0006.png", "final.png"):
        data, model, samples = panels(pixels(run_dir / "density" / name))
        for heat_map in (data, model):  # filled with viridis, mostly its low end around the data
            assert fraction(heat_map, VIRIDIS_LOW) > 0.3 and fraction(heat_map, WHITE, 10) == 0, name
        assert fraction(samples, WHITE, 10) > 0.5 and fraction(samples, GREY, 10) > 0.002, name  # data on white
        has_samples = fraction(samples, ORANGE, 60) > 0.01
        assert has_samples == (name == "final.png"), name  # the previews lie off the panel
