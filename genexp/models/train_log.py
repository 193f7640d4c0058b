"""Training scalars at a small, fixed cost per step.

Lightning's `self.log` moves and accumulates every value in its result collection: about 0.7 ms
a call on a CPU, a tenth of a small model's training step when a step logs four values. A
training step hands all its scalars to a TrainLog instead: one `torch.stack` per step and no
host sync. The module (genexp.models.base) writes the step values straight to the loggers where
Lightning writes its own step metrics (every `trainer.log_every_n_steps` steps), and their epoch
means through `self.log` once per epoch, under Lightning's names (`<name>_step`, `<name>_epoch`,
and `<name>` for callbacks).
"""

import torch
from torch import Tensor


class TrainLog:
    """This step's scalars (`names`, `values`) and, per set of names, this epoch's batch-size-weighted
    sums and the number of examples behind them."""

    def __init__(self) -> None:
        self.names: tuple[str, ...] = ()
        self.values: Tensor | None = None
        self._sums: dict[tuple[str, ...], tuple[Tensor, int]] = {}

    def add(self, scalars: dict[str, Tensor | float], batch_size: int) -> None:
        device = next((v.device for v in scalars.values() if isinstance(v, Tensor)), None)
        with torch.no_grad():  # plain numbers are filled in on the device (no host-to-device copy)
            values = torch.stack([v.detach().reshape(()) if isinstance(v, Tensor)
                                  else torch.full((), float(v), device=device) for v in scalars.values()]).float()
            self.names, self.values = tuple(scalars), values
            total, count = self._sums.get(self.names, (0.0, 0))
            self._sums[self.names] = (values * batch_size + total, count + batch_size)

    def epoch_means(self) -> dict[str, Tensor]:
        """Each name's mean over this epoch's steps that reported it, weighted by batch size
        (as Lightning's on_epoch reduction); starts the next epoch empty."""
        sums: dict[str, Tensor] = {}
        counts: dict[str, int] = {}
        for names, (total, count) in self._sums.items():
            for name, value in zip(names, total.unbind()):
                sums[name] = sums.get(name, 0.0) + value
                counts[name] = counts.get(name, 0) + count
        self._sums = {}
        return {name: sums[name] / counts[name] for name in sums}
