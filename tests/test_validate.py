"""Validation rules live in the classes they validate (`config_rules`), found by the `_target_` of
the node that builds them, without importing the class's module (and so torch)."""

import importlib
import inspect
import subprocess
import sys
import textwrap

import pytest
from omegaconf import OmegaConf

from conftest import REPO, compose_config, group_options
from genexp.errors import ConfigError
from genexp.validate import EXTERNAL_RULES, RuleError, declared_rules, parse_rule, rules_for, validate_config


def refusal(cfg: dict) -> str | None:
    """The message validate_config gives for a config built by hand, or None if it passes."""
    try:
        validate_config(OmegaConf.create(cfg))
    except ConfigError as error:
        return str(error)
    return None


VAE = {"_target_": "genexp.models.vae.VAE", "latent_dim": 4, "beta": 1.0,
       "encoder": {"_target_": "genexp.nets.mlp.MLPEncoder", "hidden_dims": [8]}}


def test_a_rule_checks_only_the_keys_of_its_own_node():
    assert refusal({"model": {**VAE, "beta": -1}}) == "model.beta=-1 is not allowed: it must be a number >= 0"
    # The same names elsewhere are not the VAE's business: a callback, a data module, a plain node.
    assert refusal({"model": VAE,
                    "data": {"_target_": "genexp.data.toy2d.Toy2DDataModule", "beta": -1, "latent_dim": 0},
                    "callbacks": {"grid": {"_target_": "genexp.callbacks.samples.SampleGrid", "beta": -1}},
                    "paths": {"beta": -1, "seed": -1, "batch_size": 0}}) is None
    # Nor are the keys of its nested nets, which have their own class's rules.
    assert refusal({"model": {**VAE, "encoder": {**VAE["encoder"], "latent_dim": 0}}}) is None
    assert "model.encoder.hidden_dims=0 is not allowed" in refusal(
        {"model": {**VAE, "encoder": {**VAE["encoder"], "hidden_dims": 0}}})
    # A key one class checks is free in another family: n_steps of the interpolation callback.
    interpolation = {"_target_": "genexp.callbacks.interpolation.LatentInterpolation", "n_steps": 0}
    assert "callbacks.interp.n_steps=0 is not allowed" in refusal({"callbacks": {"interp": interpolation}})
    assert refusal({"model": {**VAE, "n_steps": 0}}) is None
    # levels belongs to PixelCNN, not to whatever holds a PixelCNN.
    pixelcnn = {"_target_": "genexp.nets.pixelcnn.PixelCNN", "levels": 1}
    assert "model.density.levels=1 is not allowed: it must be an integer in [2, 256]" in refusal(
        {"model": {"_target_": "genexp.models.maximum_likelihood.MaximumLikelihood", "density": pixelcnn}})
    assert refusal({"model": {"_target_": "genexp.models.maximum_likelihood.MaximumLikelihood", "levels": 1}}) is None


def test_rules_of_base_classes_and_of_nested_nodes_without_a_target():
    # CVAE declares nothing itself: VAE's and AutoEncoder's rules apply.
    assert "model.latent_dim=0" in refusal({"model": {"_target_": "genexp.models.vae.CVAE", "latent_dim": 0}})
    assert "model.beta=-2" in refusal({"model": {"_target_": "genexp.models.vae.CVAE", "beta": -2}})
    # GAN's "optimizers.*.lr" reaches into its per-network optimizer arguments.
    gan = {"_target_": "genexp.models.gan.GAN", "optimizers": {"generator": {"lr": 1e-3}, "discriminator": {"lr": 0}}}
    assert refusal({"model": gan}) == ("model.optimizers.discriminator.lr=0 is not allowed: it must be a number > 0")
    assert refusal({"model": {**gan, "optimizers": {"discriminator": {"lr": 0.1, "momentum": -1}}}}).startswith(
        "model.optimizers.discriminator.momentum=-1")


def test_root_keys_trainer_and_outside_targets():
    assert refusal({"seed": -1}) == "seed=-1 is not allowed: it must be an integer >= 0"
    assert refusal({"trainer": {"max_epochs": 0}}) == (
        "trainer.max_epochs=0 is not allowed: it must be an integer >= 1, or -1 for no limit")
    assert refusal({"trainer": {"max_epochs": -1, "precision": "bf16-mixed"}}) is None
    assert "trainer.precision=7 is not allowed: it must be one of 64-true" in refusal({"trainer": {"precision": 7}})
    assert refusal({"optimizer": {"_target_": "torch.optim.SGD", "lr": 0.1, "momentum": -0.5}}) == (
        "optimizer.momentum=-0.5 is not allowed: it must be a number >= 0")
    assert refusal({"lr_scheduler": {"scheduler": {"_target_": "torch.optim.lr_scheduler.StepLR", "lr": -1}}}) is None
    # A key with no value (???) is reported wherever it is.
    assert "data.root is required" in refusal({"data": {"_target_": "nowhere.Data", "root": "???"}})


@pytest.mark.parametrize(("text", "good", "bad", "allowed"), [
    ("int >= 1", [1, 7], [0, 1.5, True, "2"], "an integer >= 1"),
    ("number > 0", [1e-4, 3], [0, -1, "abc", False], "a number > 0"),
    ("number in [0, 1)", [0, 0.5], [1, -0.1], "a number in [0, 1)"),
    ("int in (0, 10]", [1, 10], [0, 11], "an integer in (0, 10]"),
    ("bool", [True, False], [0, "true"], "true or false"),
    ("list of int >= 1; e.g. [256, 128]", [[1], [256, 128]], [[], [0], 12, [1.5]],
     "a non-empty list of integers >= 1, e.g. [256, 128]"),
    ("one of a, b-c", ["a", "b-c"], ["c", None], "one of a, b-c"),
    ("int >= 1 or -1 for no limit", [1, -1], [0, -2, -1.0], "an integer >= 1, or -1 for no limit"),
])
def test_rule_language(text, good, bad, allowed):
    rule = parse_rule(text)
    assert rule.allowed == allowed
    assert all(rule.check(v) for v in good) and not any(rule.check(v) for v in bad)


@pytest.mark.parametrize("text", ["integer >= 1", "int => 1", "number in [0, 1", "list of", ""])
def test_rule_texts_that_do_not_parse(text):
    with pytest.raises(ValueError):
        parse_rule(text)


def composed_configs():
    models, data = group_options("model"), group_options("data")
    yield from ([f"model={m}", f"data={d}"] for m in models for d in ("digits", "moons"))
    yield from ([f"data={d}"] for d in data)
    for group in ("callbacks", "optimizer", "lr_scheduler", "trainer", "logger", "experiment", "debug"):
        yield from ([f"{group}={option}"] for option in group_options(group))
    for net in group_options("model/encoder"):
        yield [f"model/encoder={net}", f"model/decoder={net}"]
    for net in group_options("model/generator"):
        yield ["model=dcgan", f"model/generator={net}", f"model/discriminator={net}"]


def targets(node) -> set[str]:
    if isinstance(node, dict):
        found = {node["_target_"]} if isinstance(node.get("_target_"), str) else set()
        return found.union(*(targets(v) for v in node.values()))
    return set()


def init_parameters(cls) -> set[str]:
    return {name for klass in cls.__mro__ if "__init__" in vars(klass)
            for name in inspect.signature(klass.__init__).parameters}


def test_every_target_in_conf_resolves_to_a_class_whose_rules_parse(tmp_path):
    found: set[str] = set()
    for overrides in composed_configs():
        cfg = compose_config(overrides, tmp_path)
        found |= targets(OmegaConf.to_container(cfg, resolve=False))
    assert len(found) > 30 and any(t.startswith("genexp.nets.") for t in found)
    problems = []
    for target in sorted(found):
        external = any(target.startswith(p) if p.endswith(".") else target == p for p in EXTERNAL_RULES)
        if target.startswith("genexp."):
            assert not external, target
            rules = declared_rules(target)
            if rules is None:
                problems.append(f"{target}: class not found statically")
                continue
            rules_for(target)  # every rule text parses (RuleError otherwise)
            # Each rule names an argument of the class (a rule for a misspelt key would never fire).
            module, _, name = target.rpartition(".")
            accepted = init_parameters(getattr(importlib.import_module(module), name))
            problems += [f"{target}: rule for {key!r}, which it does not take"
                         for key in rules if key.split(".")[0] not in accepted]
        else:
            assert external, f"{target}: outside genexp and not in EXTERNAL_RULES"
    assert not problems, problems


def test_a_new_family_brings_its_own_rules(tmp_path, monkeypatch):
    package = tmp_path / "my_family"
    package.mkdir()
    (package / "__init__.py").write_text("raise RuntimeError('validation must not import this package')\n")
    (package / "nets.py").write_text(textwrap.dedent("""
        import torch  # never run: validation reads this file, it does not import it
        from genexp.nets.mlp import MLPEncoder

        class Deep:
            config_rules = {"depth": "int >= 1"}

        class WideEncoder(Deep, MLPEncoder):
            config_rules = {"width": "int in [8, 64]", "hidden_dims": None}  # None drops a base's rule
        """))
    (package / "broken.py").write_text("class Bad:\n    config_rules = {'depth': 'integer >= 1'}\n"
                                       "class Dynamic:\n    config_rules = dict(depth='int >= 1')\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    node = {"_target_": "my_family.nets.WideEncoder", "width": 16, "depth": 2, "hidden_dims": 0}
    assert refusal({"model": {"encoder": node}}) is None
    assert refusal({"model": {"encoder": {**node, "width": 4}}}) == (
        "model.encoder.width=4 is not allowed: it must be an integer in [8, 64]")
    assert refusal({"model": {"encoder": {**node, "depth": 0}}}).startswith("model.encoder.depth=0")
    assert "my_family" not in sys.modules and "my_family.nets" not in sys.modules
    with pytest.raises(RuleError, match=r"my_family.broken.Bad: the rule for 'depth'"):
        refusal({"x": {"_target_": "my_family.broken.Bad"}})
    with pytest.raises(RuleError, match=r"my_family.broken.Dynamic.config_rules must be a dict literal"):
        refusal({"x": {"_target_": "my_family.broken.Dynamic"}})
    # A class that cannot be found statically is not checked here (Hydra reports it when it builds it).
    assert declared_rules("my_family.nets.Missing") is None
    assert refusal({"x": {"_target_": "my_family.nets.Missing", "width": 0},
                    "y": {"_target_": "nowhere_at_all.Thing", "latent_dim": -5}}) is None


PROBE = """
import sys
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from genexp.config_dir import config_dir
from genexp.errors import ConfigError
from genexp.validate import validate_config
for overrides in ([], ["model=dcgan", "callbacks=with_fid"], ["model=realnvp", "data=moons"],
                  ["model=cvae", "model/encoder=conv", "model/decoder=conv"], ["model=pixelcnn", "data=mnist"]):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = "unused"
    validate_config(cfg)
cfg.model.density.levels = 1
try:
    validate_config(cfg)
except ConfigError as error:
    print(error)
heavy = sorted(m for m in ("torch", "lightning", "torchvision") if m in sys.modules)
print("HEAVY_IMPORTS=" + ",".join(heavy))
"""


def test_validation_does_not_import_torch():
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "model.density.levels=1 is not allowed" in result.stdout
    assert "HEAVY_IMPORTS=\n" in result.stdout, result.stdout[-500:]
