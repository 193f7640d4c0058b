"""What a run prints: where it goes and what was asked at the start, its headline metrics and
files at the end, the whole config tree on request (print_config=true), and no library chatter.

No torch import here, and nothing from the rest of genexp: every layer may print.
"""

import logging
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf


T = TypeVar("T")

# Shown at the end beside the monitored metric: a family's headline test metrics, where it has them.
HEADLINE_LIMIT = 8


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.msg)


def quiet_library_chatter() -> None:
    """Lightning's advertising tips and a deprecation warning that Lightning raises inside itself
    on every run (nothing a user can act on)."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in logger.filters):
            logger.addFilter(_DropTips())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    warnings.filterwarnings("ignore", message=r"Metric .* will save all extracted features in buffer")


def print_run_start(cfg: DictConfig, model: str, data: str, overrides: list[str]) -> None:
    """Two lines: the model, data and directory of the run, and the overrides that made it."""
    print(f"genexp: {model} on {data} -> {cfg.paths.output_dir}", flush=True)
    print(f"  overrides: {' '.join(overrides) if overrides else '(none: the defaults)'}", flush=True)
    if cfg.get("print_config"):
        print_composed_config(cfg)


def print_composed_config(cfg: DictConfig) -> None:
    """The composed config as YAML, highlighted on a terminal; long values are never cut."""
    # Imported here: rich costs a tenth of the command line's start.
    from rich.console import Console
    from rich.syntax import Syntax

    text = OmegaConf.to_yaml(cfg, resolve=True)
    Console().print(Syntax(text, "yaml", theme="ansi_dark").highlight(text), soft_wrap=True, end="")


def print_run_end(output_dir: Path, record: dict[str, Any]) -> None:
    """The outcome, the headline metrics and where the run's files are."""
    metrics = record["metrics"]
    monitor = record.get("monitor")
    shown = [k for k in (monitor, *sorted(k for k in metrics if k.startswith("test/"))) if k in metrics]
    shown = list(dict.fromkeys(shown))[:HEADLINE_LIMIT]
    print(f"genexp: {record['status']} in {record['wall_time_s']:.1f} s, {record['epochs']} epochs "
          f"({record['precision']} on {record['accelerator']})")
    rows = {key: "nan" if metrics[key] is None else f"{metrics[key]:.6g}" for key in shown}
    rows["metrics"] = str(output_dir / "metrics.json")
    if (output_dir / "samples" / "final.png").is_file():
        rows["samples"] = str(output_dir / "samples" / "final.png")
    if (output_dir / "tensorboard").is_dir():
        rows["tensorboard"] = f"tensorboard --logdir {output_dir}"
    width = max(len(k) for k in rows)
    for key, text in rows.items():
        print(f"  {key:<{width}}  {text}")


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Items with a progress bar and an ETA (rich), for evaluation and sampling that take a while;
    the bar is removed when done."""
    from rich.progress import track

    yield from track(items, description=description, total=total, transient=True)
