"""Every model config with every data config: it composes, and it either survives a
fast_dev_run or refuses the pair at once with a clear GenexpError (never a deep traceback),
exactly for the pairs the model cannot take.

Parametrised over the files in conf/: a new data config is covered without touching this file,
a new model config needs its row in REFUSED.
"""

import pytest

from conftest import CONF, compose_config, group_options
from fake_data import FAKE_DATA
from genexp.errors import GenexpError
from genexp.train import run
from genexp.validate import validate_config

PAIRS = [(m, d) for m in group_options("model") for d in group_options("data")]
# What each model refuses: 2D points (image models); data of more than 1024 values at the configs'
# sizes (full-covariance Gaussians, and the autoregressive models that sample one value per
# pass); data without class labels (class-conditional models).
POINTS = {d for d in group_options("data") if "toy2d" in (CONF / "data" / f"{d}.yaml").read_text()}
LARGE = {"celeba", "cifar10", "image_folder"}
UNLABELLED = {"celeba", "image_folder"}
REFUSED = {"autoencoder": POINTS, "vae": POINTS, "beta_vae": POINTS, "dcgan": POINTS, "wgan_gp": POINTS,
           "cvae": POINTS | UNLABELLED, "cgan": POINTS | UNLABELLED, "pixelcnn": POINTS | LARGE,
           "gaussian": LARGE, "gmm": LARGE, "maf": LARGE, "realnvp": set(), "gan_2d": set(),
           "nsf": set(), "ebm": set(), "ebm_2d": set(group_options("data")) - POINTS, "ddpm": POINTS, "cddpm": POINTS | UNLABELLED,
           "ddpm_2d": set(group_options("data")) - POINTS}
# Sampling costs a network call per step: short chains keep a 64 px fast_dev_run of these models
# (one test batch of samples, the final grid and chains) to seconds; it checks the pairing, not samples.
SHORT_SAMPLING = {"ddpm": ["model.sampler.steps=2", "model.preview_steps=2", "model.bound_samples=2"],
                  "ebm": ["model.steps=2", "model.sample_steps=2", "model.preview_steps=2"]}


@pytest.mark.parametrize(("model", "data"), PAIRS, ids=[f"{m}-{d}" for m, d in PAIRS])
def test_model_data_pair_fast_dev_run(model, data, tmp_path):
    overrides = FAKE_DATA[data](tmp_path / "data") if data in FAKE_DATA else []
    short = next((v for k, v in SHORT_SAMPLING.items() if model.startswith(k) or model == f"c{k}"), [])
    cfg = compose_config([f"model={model}", f"data={data}", "debug=fdr", "logger=none", *overrides, *short],
                         tmp_path / "run")
    try:
        validate_config(cfg)
        run(cfg)
    except GenexpError as error:
        assert data in REFUSED[model], f"{model} refused {data}: {error}"
        # A refusal must say which key is at fault.
        assert "model." in str(error) or "data." in str(error), str(error)
        return
    assert data not in REFUSED[model], f"{model} trained on {data}, which it should refuse"
    assert (tmp_path / "run" / "metrics.json").is_file()
