"""Early checks of a composed config, before torch is imported or any data is read.

Hydra already rejects unknown group options and unknown keys. This module rejects values
of the wrong type or out of range, wherever the key appears in the tree (a rule for `lr`
applies to `optimizer.lr` and to any other `*.lr`), and names the key and what is allowed.
"""

from collections.abc import Callable, Iterator
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from genexp.errors import ConfigError

PRECISIONS = ("64-true", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64", "32", "16", "bf16")


Rule = tuple[Callable[[Any], bool], str]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int(minimum: int) -> Rule:
    return (lambda v: _is_int(v) and v >= minimum), f"an integer >= {minimum}"


def _float(minimum: float, strict: bool) -> Rule:
    return ((lambda v: _is_number(v) and (v > minimum if strict else v >= minimum)),
            f"a number {'>' if strict else '>='} {minimum}")


def _half_open(low: float, high: float) -> Rule:
    return (lambda v: _is_number(v) and low <= v < high), f"a number in [{low:g}, {high:g})"


def _fraction() -> Rule:
    return _half_open(0, 1)


# Rules by leaf name. Keys not listed here are checked where they are used.
RULES: dict[str, Rule] = {
    "lr": _float(0, strict=True),
    "batch_size": _int(1),
    "latent_dim": _int(1),
    "image_size": _int(1),
    "num_workers": _int(0),
    "n_samples": _int(1),
    "every_n_epochs": _int(1),
    "weight_decay": _float(0, strict=False),
    "momentum": _float(0, strict=False),
    "beta": _float(0, strict=False),
    "kl_warmup_epochs": _float(0, strict=False),
    "capacity_max": _float(0, strict=False),
    "capacity_epochs": _float(0, strict=False),
    "sigma": _float(0, strict=True),
    "iwae_samples": _int(0),
    "n_pairs": _int(1),
    "n_steps": _int(1),
    "max_dims": _int(1),
    "span": _float(0, strict=True),
    "n_points": _int(1),
    "n_images": _int(1),
    "n_attribute": _int(2),
    "n_critic": _int(1),
    "gp_weight": _float(0, strict=False),
    "g_lr": _float(0, strict=True),
    "d_lr": _float(0, strict=True),
    "g_width": _int(1),
    "d_width": _int(1),
    "class_embed_dim": _int(1),
    "label_noise": _fraction(),
    "d_dropout": _fraction(),
    "ema_decay": _fraction(),
    "crop_size": _int(1),
    "eval_examples": _int(2),
    "n_train": _int(1),
    "n_val": _int(1),
    "n_test": _int(1),
    "n_components": _int(1),
    "init_samples": _int(1),
    "n_couplings": _int(1),
    "couplings_per_scale": _int(1),
    "n_scales": _int(1),
    "n_layers": _int(1),
    "hidden_channels": _int(1),
    "n_blocks": _int(0),
    "levels": (lambda v: _is_int(v) and 2 <= v <= 256, "an integer from 2 (binarised) to 256 (8-bit)"),
    "logit_alpha": _half_open(0, 0.5),
    "grid_size": _int(2),
    "val_fraction": _fraction(),
    "test_fraction": _fraction(),
    "seed": _int(0),
    "split_seed": _int(0),
    "max_epochs": (lambda v: _is_int(v) and (v >= 1 or v == -1), "an integer >= 1, or -1 for no limit"),
    "precision": (lambda v: str(v) in PRECISIONS, "one of " + ", ".join(PRECISIONS)),
    "download": (lambda v: isinstance(v, bool), "true or false"),
    "hidden_dims": (lambda v: isinstance(v, (list, ListConfig)) and len(v) > 0
                    and all(_is_int(h) and h >= 1 for h in v),
                    "a non-empty list of integers >= 1, e.g. [256, 128]"),
}


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, DictConfig):
        for key in node.keys():
            path = f"{prefix}.{key}" if prefix else str(key)
            if OmegaConf.is_missing(node, key):
                raise ConfigError(f"{path} is required but has no value (??? in the config); set it with {path}=...")
            yield from _leaves(node[key], path)
    else:
        yield prefix, node


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first bad key; resolves interpolations on the way."""
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"]) if "hydra" in cfg else cfg
    for path, value in _leaves(cfg):
        rule = RULES.get(path.rsplit(".", 1)[-1])
        if rule is None or value is None:
            continue
        check, allowed = rule
        if not check(value):
            raise ConfigError(f"{path}={value!r} is not allowed: it must be {allowed}")
