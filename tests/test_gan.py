"""The GAN family: losses, gradient penalty, EMA, conditioning, every config on every image
shape, bf16-mixed, refusals of configurations that cannot work, and DDP on two CPU processes."""

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.plugins import MixedPrecision
from omegaconf import OmegaConf, open_dict

from conftest import compose_config
from genexp.data.image_tensor import ImageTensorDataModule
from genexp.errors import ConfigError
from genexp.metrics.pixel_mmd import mmd_squared
from genexp.models.gan import GAN, discriminator_loss, generator_loss, gradient_penalty
from genexp.train import instantiate_data_and_model, strategy

ADAM = {"_target_": "torch.optim.Adam"}
SHAPES = [(1, 8), (1, 16), (1, 28), (3, 32), (3, 64)]


class RandomImages(ImageTensorDataModule):
    """Random uint8 images with labels 0..3, no files needed."""

    def source_fingerprint(self) -> str:
        return "random"

    def load_raw(self, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(0 if part == "train" else 1)
        images = torch.randint(0, 256, (12, *self.shape), generator=g, dtype=torch.uint8)
        return images, torch.arange(12) % 4


def random_images(channels: int, side: int, value_range=(-1.0, 1.0)) -> RandomImages:
    return RandomImages(shape=[channels, side, side], image_size=side, num_classes=4, batch_size=4,
                        val_fraction=0.34, value_range=value_range)


def tiny_gan(channels: int = 1, side: int = 8, d: dict | None = None, **overrides) -> GAN:
    """A GAN with 4-channel DCGAN nets; `d`: changes to the discriminator's config."""
    kwargs = dict(shape=[channels, side, side], value_range=[-1.0, 1.0], latent_dim=8, optimizer=ADAM,
                  generator={"_target_": "genexp.nets.dcgan.DCGANGenerator", "width": 4},
                  discriminator={"_target_": "genexp.nets.dcgan.DCGANDiscriminator", "width": 4} | (d or {}))
    return GAN(**kwargs | overrides)


def fit(model: GAN, data: RandomImages, epochs: int = 1, **trainer_kwargs) -> L.Trainer:
    """Two training batches and one validation batch per epoch."""
    trainer = L.Trainer(accelerator="cpu", max_epochs=epochs, limit_val_batches=1, num_sanity_val_steps=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, **trainer_kwargs)
    trainer.fit(model, data)
    return trainer


def test_losses_match_hand_computed_values():
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.0])
    ones, zeros = torch.ones(2), torch.zeros(2)
    assert discriminator_loss("hinge", real, fake, ones, zeros).item() == pytest.approx(0.5 + 0.5)
    assert discriminator_loss("wasserstein-gp", real, fake, ones, zeros).item() == pytest.approx(-1.0 - 1.0)
    assert discriminator_loss("least-squares", real, fake, ones, zeros).item() == pytest.approx(
        0.5 * (1 + 1) / 2 + 0.5 * (4 + 0) / 2)
    softplus = torch.nn.functional.softplus
    expected = (softplus(-real).mean() + softplus(fake).mean()).item()
    assert discriminator_loss("non-saturating", real, fake, ones, zeros).item() == pytest.approx(expected)
    assert generator_loss("non-saturating", fake).item() == pytest.approx(softplus(-fake).mean().item())
    assert generator_loss("hinge", fake).item() == pytest.approx(1.0)
    assert generator_loss("least-squares", fake).item() == pytest.approx(0.5 * (9 + 1) / 2)


def test_gradient_penalty_against_hand_computed_cases():
    torch.manual_seed(0)
    real, fake = torch.randn(5, 1, 2, 2), torch.randn(5, 1, 2, 2)
    # A linear critic D(x) = <w, x> has gradient w everywhere: GP = (||w|| - 1)^2 whatever the mix.
    w = torch.tensor([3.0, 0.0, 4.0, 0.0]).view(1, 1, 2, 2)
    linear = lambda x, labels: (x * w).flatten(1).sum(1)  # noqa: E731
    assert gradient_penalty(linear, real, fake).item() == pytest.approx((5.0 - 1.0) ** 2)
    # D(x) = ||x||^2 / 2 has gradient x; with real == fake the mix is x itself.
    quadratic = lambda x, labels: 0.5 * x.pow(2).flatten(1).sum(1)  # noqa: E731
    expected = ((real.flatten(1).norm(dim=1) - 1.0) ** 2).mean()
    assert gradient_penalty(quadratic, real, real.clone()).item() == pytest.approx(expected.item(), rel=1e-5)


def test_ema_update_follows_the_warmed_up_decay():
    model = tiny_gan(ema_decay=0.9)
    params = lambda m: torch.nn.utils.parameters_to_vector(m.parameters())  # noqa: E731
    with torch.no_grad():
        for p in model.generator.parameters():
            p.fill_(1.0)
    model.generator_ema.update(model.generator)  # the first update takes 0.9 of the new weights
    assert torch.allclose(params(model.generator_ema.module), torch.ones(1))
    with torch.no_grad():
        for p in model.generator.parameters():
            p.fill_(3.0)
    model.generator_ema.update(model.generator)
    decay = min(0.9, (1 + 1) / (10 + 1))  # warm-up after one average
    assert torch.allclose(params(model.generator_ema.module), torch.tensor(decay * 1.0 + (1 - decay) * 3.0))
    # Samples come from the averaged generator.
    model.eval()
    z = model.noise(3, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(model.sample(3, generator=torch.Generator().manual_seed(0)),
                          model.to_data_range(model.generator_ema.module(z)))


@pytest.mark.parametrize("conditioning", ["projection", "concat"])
def test_conditional_sampling_shapes_and_labels(conditioning):
    model = tiny_gan(3, 16, conditional=True, num_classes=4, d={"conditioning": conditioning}).eval()
    labels = torch.arange(4).repeat_interleave(2)
    samples = model.sample(8, labels=labels, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (8, 3, 16, 16)
    # The same noise with another label gives another image.
    other = model.sample(8, labels=(labels + 1) % 4, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(samples, other)
    assert model.sample(5).shape == (5, 3, 16, 16)  # labels drawn when not given
    assert model.discriminator(samples, labels).shape == (8,)


def test_samples_lie_in_the_data_range():
    model = tiny_gan(value_range=[0.0, 1.0]).eval()
    samples = model.sample(16)
    assert samples.min() >= 0.0 and samples.max() <= 1.0


@pytest.mark.parametrize("name", ["dcgan", "wgan_gp", "cgan"])
@pytest.mark.parametrize(("channels", "side"), SHAPES, ids=[f"{c}x{s}" for c, s in SHAPES])
def test_each_gan_config_trains_on_each_image_shape(name, channels, side, tmp_path):
    cfg = compose_config([f"model={name}", "data=digits", f"data.image_size={side}", "data.value_range=[-1,1]",
                          "model.generator.width=4", "model.discriminator.width=4", "model.latent_dim=8", "model.eval_examples=4"],
                         tmp_path)
    with open_dict(cfg):
        cfg.data.shape = [channels, side, side]
        cfg.model.num_classes = 4
    model = instantiate(cfg.model, _recursive_=False, _convert_="all",
                        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True), lr_scheduler={})
    first_weights = lambda: [next(model.generator.parameters()).detach().clone(),  # noqa: E731
                             next(model.discriminator.parameters()).detach().clone()]
    before = first_weights()
    # >= 1 generator step; gradient norms are measured on the steps that are logged
    trainer = fit(model, random_images(channels, side), epochs=-(-model.n_critic // 2), log_every_n_steps=1)
    assert all(not torch.equal(b, a) for b, a in zip(before, first_weights()))
    metrics = trainer.callback_metrics
    assert {"train/d_loss", "train/g_loss", "train/d_real", "train/d_fake", "train/d_grad_norm",
            "train/g_grad_norm", "val/pixel_mmd", "val/d_real"} <= set(metrics)
    assert ("train/gp" in metrics) == (name == "wgan_gp")
    assert all(torch.isfinite(v).all() for v in metrics.values())


def test_bf16_mixed_precision_on_cpu():
    model = tiny_gan(3, 16, loss="wasserstein-gp", d={"norm": "layer"}, conditional=True, num_classes=4)
    trainer = fit(model, random_images(3, 16), precision="bf16-mixed")
    assert trainer.global_step == 4
    assert all(torch.isfinite(v).all() for v in trainer.callback_metrics.values())
    assert next(model.generator.parameters()).dtype == torch.float32


def test_float16_mixed_precision_with_a_loss_scaler():
    # Lightning uses a GradScaler for 16-mixed on GPUs; torch offers one on the CPU as well.
    scaler = torch.amp.GradScaler("cpu")
    model = tiny_gan(3, 16, loss="wasserstein-gp", d={"norm": "layer"})
    trainer = fit(model, random_images(3, 16), epochs=2, plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["train/gp"]) and torch.isfinite(metrics["train/d_loss"])
    assert all(torch.isfinite(v).all() for v in metrics.values())


def test_schedulers_are_stepped_by_the_manual_loop():
    scheduler = {"interval": "step", "scheduler": {"_target_": "torch.optim.lr_scheduler.StepLR",
                                                   "step_size": 1, "gamma": 0.5}}
    model = tiny_gan(lr_scheduler=scheduler, optimizer=ADAM | {"lr": 1e-3}, optimizers={"discriminator": {"lr": 4e-3}})
    trainer = fit(model, random_images(1, 8))
    g_lr, d_lr = (o.param_groups[0]["lr"] for o in trainer.optimizers)
    assert (g_lr, d_lr) == pytest.approx((1e-3 / 4, 4e-3 / 4))  # two training batches, one step each


def test_pixel_mmd_separates_distributions():
    torch.manual_seed(0)
    x, y = torch.rand(200, 8), torch.rand(200, 8)
    assert abs(mmd_squared(x, y).item()) < 0.01
    assert mmd_squared(x, y * 0.5).item() > 0.1


@pytest.mark.parametrize(("overrides", "message"), [
    ({"shape": [2]}, "data.shape=[2]"),
    ({"value_range": None}, "model.value_range"),
    ({"loss": "wasserstein-gp", "d": {"norm": "batch"}}, "model.discriminator.norm"),
    ({"loss": "hinge", "label_noise": 0.1}, "model.label_noise"),
    ({"loss": "wgan"}, "model.loss='wgan'"),
    ({"conditional": True, "num_classes": None}, "data.num_classes"),
    ({"shape": [1, 30, 30]}, "data.image_size=30"),
    ({"d": {"norm": "instance"}}, "model.discriminator.norm"),
    ({"optimizers": {"critic": {"lr": 0.1}}}, "model.optimizers"),
])
def test_configurations_that_cannot_work_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        tiny_gan(**overrides)


def test_ddp_two_cpu_processes_keep_weights_identical(tmp_path):
    script = Path(__file__).with_name("gan_ddp_script.py")
    result = subprocess.run([sys.executable, str(script), str(tmp_path), "wasserstein-gp",
                             "ddp_find_unused_parameters_true"], capture_output=True, text=True, timeout=240,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    model = tiny_gan(latent_dim=4, loss="wasserstein-gp", d={"norm": "none"}, conditional=True, num_classes=10)
    names = [n for n, _ in model.named_parameters()]  # parameters; batch-norm statistics are rank 0's
    assert any(n.startswith("generator.") for n in names) and any(n.startswith("discriminator.") for n in names)
    for name in names:
        assert torch.equal(ranks[0][name], ranks[1][name]), name
    assert ranks[0]["generator_ema.n_averaged"] > 0  # generator steps happened


def test_ddp_without_unused_parameter_detection_is_refused_before_training():
    with pytest.raises(ConfigError, match="ddp_find_unused_parameters_true"):
        fit(tiny_gan(), random_images(1, 8), strategy="ddp", devices=1)


GAN_CONFIGS = {
    "dcgan": ["data=digits", "data.image_size=8", "data.value_range=[-1,1]", "model.generator.width=4",
              "model.discriminator.width=4"],
    "wgan_gp": ["data=digits", "data.image_size=8", "data.value_range=[-1,1]", "model.generator.width=4",
                "model.discriminator.width=4", "model.n_critic=2"],
    "gan_2d": ["data=eight_gaussians", "data.n_train=2048"],
}


def trained_gan(tmp_path, name: str, *overrides: str) -> tuple[GAN, L.Trainer]:
    """A few training batches of a GAN config composed as `python -m genexp` composes it."""
    cfg = compose_config([f"model={name}", *GAN_CONFIGS[name], *overrides], tmp_path)
    L.seed_everything(0)
    datamodule, model = instantiate_data_and_model(cfg)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=4, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule)
    return model, trainer


@pytest.mark.parametrize("name", sorted(GAN_CONFIGS))
def test_the_optimizer_group_drives_both_networks(name, tmp_path):
    """A sweep over optimizer.lr trains different GANs (the learning rate reaches both networks)."""
    weights = []
    for lr in (1e-4, 3e-4):
        model, trainer = trained_gan(tmp_path, name, f"optimizer.lr={lr}")
        assert [o.param_groups[0]["lr"] for o in trainer.optimizers] == [lr, lr]
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
    for net in ("generator.", "discriminator."):
        assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0] if k.startswith(net)), net


def test_each_network_may_change_the_optimizer_group(tmp_path):
    _, trainer = trained_gan(tmp_path, "dcgan", "optimizer=adamw", "optimizer.lr=1e-4",
                             "model.optimizers.discriminator.lr=4e-4")
    g, d = trainer.optimizers
    assert isinstance(g, torch.optim.AdamW) and isinstance(d, torch.optim.AdamW)
    assert (g.param_groups[0]["lr"], d.param_groups[0]["lr"]) == (1e-4, 4e-4)
    assert g.param_groups[0]["weight_decay"] == d.param_groups[0]["weight_decay"] == 1e-2  # the group's own


def test_trainer_ddp_runs_a_gan_with_unused_parameter_detection_by_itself(tmp_path):
    gan = compose_config(["model=dcgan", "trainer=ddp"], tmp_path)
    vae = compose_config(["model=vae", "trainer=ddp"], tmp_path)
    assert strategy(gan, instantiate_data_and_model(gan)[1]) == "ddp_find_unused_parameters_true"
    assert strategy(vae, instantiate_data_and_model(vae)[1]) == "ddp"  # automatic optimisation: plain DDP
