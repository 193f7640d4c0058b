"""No key of a model config is silently ignored: overriding any key of any model config changes
the built module, its first training steps, its validation or test metrics or its checkpoint monitor, or the
module refuses the value. A key that changed none of these would be a setting the user believes
in and the model never reads."""

import math

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose_config, group_options
from genexp.errors import GenexpError
from genexp.train import instantiate_data_and_model

DIGITS = ["data=digits", "data.image_size=8", "data.batch_size=16"]
POINTS = ["data=moons", "data.n_train=512", "data.n_val=64", "data.n_test=64", "data.batch_size=64"]
# 16 px: the DCGAN discriminator normalises from its second layer on (an 8 px image has one).
GAN_DIGITS = ["data=digits", "data.image_size=16", "data.batch_size=16", "data.value_range=[-1,1]",
              "model.eval_examples=8"]
DIFFUSION = ["model.schedule.steps=100", "model.sampler.steps=10", "model.preview_steps=4", "model.bound_samples=4",
             "model.eval_examples=8", "model.val_examples=8"]
# The data each model is tried on: a key passes if it changes something on one of them (the
# image-only keys of a flow, say, act on images only).
# (wgan_gp with 2 critic steps: its generator and weight average move within the 4 training batches.)
DATA = {"dcgan": [GAN_DIGITS], "wgan_gp": [[*GAN_DIGITS, "model.n_critic=2"]], "cgan": [GAN_DIGITS], "gan_2d": [POINTS],
        "pixelcnn": [DIGITS], "realnvp": [DIGITS, POINTS], "nsf": [POINTS, DIGITS],
        "ebm": [DIGITS, POINTS], "ebm_2d": [POINTS],
        # diffusion: a short schedule and sampler (keys that act on samples show in test/sample_mmd)
        "ddpm": [[*DIGITS, *DIFFUSION]], "cddpm": [[*DIGITS, *DIFFUSION]],
        "ddpm_2d": [[*POINTS, "model.schedule.steps=100", "model.sampler.steps=10", "model.bound_samples=4",
                     "model.val_examples=8"]],
        # gmm: the EM fit's keys act with fit=em (the default), the start's keys with fit=gradient.
        "gmm": [DIGITS, [*DIGITS, "model.density.fit=gradient"]]}
# Values to try where "another value" is not obvious from the type (the first that differs).
ALTERNATIVES = {"loss": ["least-squares", "hinge"], "likelihood": ["gaussian"], "covariance": ["diag"],
                "mask": ["checkerboard"], "monitor": ["val/other"], "monitor_mode": ["max"], "norm": ["layer"],
                "conditioning": ["concat"], "capacity_max": [5.0], "eval_examples": [4], "iwae_samples": [3],
                "levels": [4], "max_dims": [1], "init_samples": [64], "n_critic": [2, 3], "first_kernel": [5],
                "hidden_dims": [[16]], "n_scales": [1], "couplings_per_scale": [1], "sigma": [0.5],
                "transform": ["coupling"],
                # diffusion: U-Net shapes that 8 px digits allow, and values where the default has none
                "widths": [[16, 32]], "attention_resolutions": [[4]], "downsample": ["avgpool"],
                "prediction": ["v", "eps"], "min_snr_gamma": [5.0], "name": ["ddpm", "ddim"], "guidance_scale": [2.0, 3.0],
                # ebm: a Langevin noise and clip where the default has none; divergence limits that trip at once.
                "noise": [0.05], "grad_clip": [0.03, 0.1], "max_energy": [1e-6], "max_saturation": [1e-6],
                # ebm: a coarse grid (a finer one moves log Z by less than float precision).
                "grid_size": [16],
                # A few training steps: the average's decay is still warming up, (1 + n) / (10 + n).
                "ema_decay": [0.1],
                # gmm's EM: a fit that stops sooner (the default runs more than 2 iterations on digits).
                "fit": ["gradient", "em"], "tol": [1.0], "max_iter": [2], "reg_covar": [1e-2]}


def alternative(key: str, value):
    name = key.rsplit(".", 1)[-1]
    if name in ALTERNATIVES:
        return next(v for v in ALTERNATIVES[name] if v != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return 0.3 if value == 0 else value / 2
    raise AssertionError(f"no alternative value for {key}={value!r}: add one to ALTERNATIVES")


def as_override(value) -> str:
    """A value as the command line writes it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(map(as_override, value)) + "]"
    return "null" if value is None else str(value)


def model_keys(name: str, data: list[str]) -> list[tuple[str, object]]:
    """Every leaf of conf/model/<name> (as `data` leaves it), except `_target_`s and the values read
    from other groups."""
    raw = OmegaConf.to_container(compose_config([f"model={name}", *data], "/unused").model, resolve=False)

    def walk(node, prefix):
        for key, value in node.items():
            path = f"{prefix}.{key}"
            if isinstance(value, dict):
                yield from walk(value, path)
            elif key != "_target_" and not (isinstance(value, str) and value.startswith("${")):
                yield path, value

    return list(walk(raw, "model"))


def fingerprint(overrides: list[str], tmp_path):
    """What a model config makes: the weights after four training batches, the metrics of one validation
    and one test batch, and the monitor; or the refusal."""
    cfg = compose_config(overrides, tmp_path)
    L.seed_everything(0)
    try:
        datamodule, model = instantiate_data_and_model(cfg)
        trainer = L.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=4, limit_val_batches=1,
                            limit_test_batches=1, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(model, datamodule)
        fit_metrics = dict(trainer.callback_metrics)  # validation's, which testing replaces
        trainer.test(model, datamodule, verbose=False)
    except GenexpError as error:
        return "refused", str(error)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    metrics = {k: float(v) for k, v in (fit_metrics | trainer.callback_metrics).items()}
    return state, metrics, (model.monitor, model.monitor_mode)


def same(a, b) -> bool:
    if a[0] == "refused" or b[0] == "refused":
        return a == b
    (state_a, metrics_a, monitor_a), (state_b, metrics_b, monitor_b) = a, b
    return (monitor_a == monitor_b and state_a.keys() == state_b.keys()
            and all(state_a[k].shape == state_b[k].shape and torch.equal(state_a[k], state_b[k]) for k in state_a)
            and metrics_a.keys() == metrics_b.keys()
            and all(math.isclose(metrics_a[k], metrics_b[k], rel_tol=0, abs_tol=0) or
                    (math.isnan(metrics_a[k]) and math.isnan(metrics_b[k])) for k in metrics_a))


@pytest.mark.slow
@pytest.mark.parametrize("name", group_options("model"))
def test_every_key_of_a_model_config_changes_something(name, tmp_path):
    settings = DATA.get(name, [DIGITS])
    baselines = [fingerprint([f"model={name}", *data], tmp_path) for data in settings]
    assert all(b[0] != "refused" for b in baselines), baselines
    ignored = []
    for key, value in model_keys(name, settings[0]):
        override = f"{key}={as_override(alternative(key, value))}"
        if all(same(base, fingerprint([f"model={name}", *data, override], tmp_path))
               for base, data in zip(baselines, settings)):
            ignored.append(override)
    assert not ignored, f"model={name}: these overrides changed nothing: {ignored}"
