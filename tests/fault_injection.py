"""Callbacks that stage faults in a run started by a test (importable with PYTHONPATH=tests)."""

import time

import lightning as L
import torch


class PauseAfterFirstEpoch(L.Callback):
    """Holds a new run (not a resumed one) at the start of its second epoch, its first
    checkpoint written, until a signal stops it or `seconds` pass, so a test can kill it there."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        deadline = time.monotonic() + self.seconds
        while trainer.ckpt_path is None and trainer.current_epoch == 1 and time.monotonic() < deadline and not trainer.should_stop:
            time.sleep(0.05)


class PoisonWeightsAfterFirstEpoch(L.Callback):
    """Makes every loss of the second epoch NaN."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch >= 1:
            with torch.no_grad():
                for parameter in pl_module.parameters():
                    parameter.fill_(float("nan"))
