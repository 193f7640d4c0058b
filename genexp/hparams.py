"""What a run puts in TensorBoard's HParams table: one row, with what tells the run apart from
other runs beside the metrics it is judged by.

How the HParams plugin reads rows, and so how this one is written:
- Without an experiment summary, the plugin builds the table from all runs' sessions: the
  hyperparameter columns are the union of theirs, those that differ between runs first (then by
  name), and the metric columns are the scalar tags found under any session's run directory, by
  name. One run's experiment summary (Lightning's `log_hyperparams` writes one) would fix both
  lists for every run, blanking the rows of other model families.
- The dashboard shows the first five columns of each by default. So a row holds few
  hyperparameters and few metrics, the latter in a TensorBoard run of its own,
  <tensorboard dir>/hparams, under their usual tags: no scalar cards of their own.
The full config stays in .hydra/config.yaml, every final metric in metrics.json (genexp.compare).
"""

import shutil
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2, summary_v2
from torch.utils.tensorboard import SummaryWriter

from genexp.jobs import run_choices, run_overrides

# Beside the options and overrides: what any two runs are compared on.
HEADLINE_KEYS = ("seed", "data.batch_size", "trainer.max_epochs", "optimizer.lr")
RUN_NAME = "hparams"

Value = bool | int | float | str


def row_hparams(cfg: DictConfig) -> dict[str, Value]:
    """The model and data options, each command-line override, then the headline keys, with the
    values the run used (numbers stay numbers, so that the table filters and sorts them)."""
    model, data = run_choices(cfg)
    row: dict[str, Value] = {"model": model, "data": data}
    for override in run_overrides():
        key, _, text = override.partition("=")
        key = key.lstrip("+~")
        if key.startswith("hydra/"):  # how jobs are launched, not what they train
            continue
        value = OmegaConf.select(cfg, key)
        # A group option (`optimizer=sgd`), a list or a null as typed on the command line.
        row[key] = value if isinstance(value, Value) else text or override
    for key in HEADLINE_KEYS:
        value = OmegaConf.select(cfg, key)
        if isinstance(value, Value):
            row.setdefault(key, value)
    return row


def row_metrics(metrics: dict[str, float], monitor: str | None, optimized: str | None) -> dict[str, float]:
    """The monitored metric (its final validation value), the same on the test split (of the best
    checkpoint), and what a sweep optimises: two or three per family, so that the first five
    metric columns hold values of every family's rows."""
    test = f"test/{monitor.split('/', 1)[-1]}" if monitor else None
    return {name: metrics[name] for name in dict.fromkeys((monitor, test, optimized)) if name in metrics}


def write_hparams_row(log_dir: Path, cfg: DictConfig, metrics: dict[str, float], monitor: str | None,
                      step: int) -> None:
    """The run's HParams session and its metrics, in <log_dir>/hparams (a completed run's)."""
    session_dir = Path(log_dir) / RUN_NAME
    shutil.rmtree(session_dir, ignore_errors=True)  # a resumed run's row replaces its earlier one
    with SummaryWriter(str(session_dir)) as writer:
        # No trial id: the row is named by its run directory, so runs with equal rows stay apart
        # (the plugin would average the metrics of one trial id).
        writer.file_writer.add_summary(summary_v2.hparams_pb(row_hparams(cfg), trial_id=""), step)
        for tag, value in row_metrics(metrics, monitor, cfg.get("optimized_metric")).items():
            writer.add_scalar(tag, value, step)
        writer.file_writer.add_summary(_session_end(), step)


def _session_end() -> Summary:
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=time.time())
    content = metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(session_end_info=end))
    return Summary(value=[Summary.Value(tag=metadata.SESSION_END_INFO_TAG, metadata=content,
                                        tensor=metadata.NULL_TENSOR)])
