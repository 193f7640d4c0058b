"""A GAN on 2D points (model=gan_2d): MLP nets chosen by config train on a toy set, and a short
run on eight Gaussians covers most of the modes, the classic check for mode collapse."""

import math

import lightning as L
import torch

from conftest import compose_config
from genexp.train import instantiate_data_and_model

RADIUS, SIGMA = 4 / 1.414, 0.5 / 1.414  # genexp.data.toy2d: eight_gaussians
CENTRES = torch.tensor([(RADIUS * math.cos(k * math.pi / 4), RADIUS * math.sin(k * math.pi / 4)) for k in range(8)])


def modes_covered(samples: torch.Tensor, min_share: float = 0.02) -> tuple[int, float]:
    """(modes holding at least min_share of the samples within 3 sigma, share of samples near any mode)."""
    distance = torch.cdist(samples, CENTRES)  # (N, 8)
    near = distance.min(dim=1).values < 3 * SIGMA
    nearest = distance.argmin(dim=1)
    shares = torch.bincount(nearest[near], minlength=8).float() / len(samples)
    return int((shares >= min_share).sum()), near.float().mean().item()


def test_a_short_run_covers_most_of_the_eight_modes(tmp_path):
    cfg = compose_config(["model=gan_2d", "data=eight_gaussians", "data.n_train=8192"], tmp_path)
    L.seed_everything(0)
    datamodule, model = instantiate_data_and_model(cfg)
    assert type(model.generator).__name__ == "MLPGenerator"
    assert type(model.discriminator).__name__ == "MLPDiscriminator"
    before, _ = modes_covered(model.eval().sample(4000, generator=torch.Generator().manual_seed(0)))
    trainer = L.Trainer(accelerator="cpu", max_epochs=20, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model.train(), datamodule)
    covered, near = modes_covered(model.eval().sample(4000, generator=torch.Generator().manual_seed(0)))
    assert before <= 3  # the untrained generator puts its points near the origin
    assert covered >= 6, (covered, near)
    assert near >= 0.5, (covered, near)
