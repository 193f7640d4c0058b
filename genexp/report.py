"""What a run reports about itself: the config tree at the start, metrics.json and HParams at the end."""

import json
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def print_config_tree(cfg: DictConfig) -> None:
    """The composed config as a rich tree, one branch per top-level group."""
    # Imported here: the command line reaches this module for metrics.json alone.
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("[bold]config[/bold]")
    for key, value in cfg.items():
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        tree.add(f"[bold cyan]{key}[/bold cyan]").add(Syntax(text.rstrip(), "yaml", theme="ansi_dark"))
    Console().print(tree)


def flatten(cfg: DictConfig) -> dict[str, Any]:
    """{'model.latent_dim': 16, ...}; lists become strings so TensorBoard's HParams accepts them."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        else:
            flat[prefix] = node if isinstance(node, (int, float, str, bool)) else str(node)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Plain floats from Lightning's callback metrics (tensors and numbers)."""
    out = {}
    for key, value in metrics.items():
        value = float(value.item() if hasattr(value, "item") else value)
        out[key] = value
    return dict(sorted(out.items()))


def write_metrics(path: Path, payload: dict[str, Any]) -> None:
    """metrics.json, written to a temporary file first so it is never half-written."""
    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    payload = {k: ({mk: clean(mv) for mk, mv in v.items()} if isinstance(v, dict) else clean(v))
               for k, v in payload.items()}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
