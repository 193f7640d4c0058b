"""Trains a tiny GAN for a few steps with two CPU processes (DDP over gloo) and saves each
process's weights, so a test can check they are identical. Run as a script:
    python tests/gan_ddp_script.py <output folder> <loss> <strategy>
Lightning's ddp strategy re-launches this same command for the second process."""

import sys
from pathlib import Path

import lightning as L
import torch

from genexp.data.digits import DigitsDataModule
from genexp.models.gan import GAN


def main(out: Path, loss: str, strategy: str) -> None:
    torch.set_num_threads(1)
    L.seed_everything(0)
    data = DigitsDataModule(shape=[1, 8, 8], image_size=8, num_classes=10, batch_size=8, value_range=[-1, 1])
    model = GAN(shape=[1, 8, 8], value_range=[-1, 1], latent_dim=4, loss=loss,
                generator={"_target_": "genexp.nets.dcgan.DCGANGenerator", "width": 4},
                discriminator={"_target_": "genexp.nets.dcgan.DCGANDiscriminator", "width": 4,
                               "norm": "none" if loss == "wasserstein-gp" else "batch"},
                conditional=True, num_classes=10,
                n_critic=2, optimizer={"_target_": "torch.optim.Adam"})
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy=strategy, max_steps=8, limit_val_batches=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(model, data)
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
