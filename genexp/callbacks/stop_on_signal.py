"""Ctrl-C (SIGINT) and SIGTERM, what schedulers send before they kill a job: the run stops after
the current training step, writes its last checkpoint and ends cleanly, ready to be resumed."""

import signal
from pathlib import Path

import lightning as L


class StopOnSignal(L.Callback):
    """While training, SIGINT and SIGTERM only set a flag; the trainer stops at the next step
    boundary, and `last_checkpoint` is written when training ends. `received` names the signal."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, last_checkpoint: str | Path) -> None:
        self.last_checkpoint = Path(last_checkpoint)
        self.received: str | None = None
        self._previous: dict = {}
        self._trainer: L.Trainer | None = None

    def _handle(self, signum: int, frame) -> None:
        self.received = signal.Signals(signum).name
        if self._trainer is not None:
            self._trainer.should_stop = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After Lightning's own handlers (registered when fit starts), so these take precedence.
        self._trainer = trainer
        self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handlers()
        if self.received:
            trainer.save_checkpoint(self.last_checkpoint)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous, self._trainer = {}, None
