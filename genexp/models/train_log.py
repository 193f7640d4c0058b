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
    """This step's scalars (`names`, `values`) and this epoch's rows for batch-size-weighted means."""

    def __init__(self) -> None:
        self.names: tuple[str, ...] = ()
        self.values: Tensor | None = None
        self._rows: list[tuple[tuple[str, ...], Tensor, int]] = []

    def add(self, scalars: dict[str, Tensor | float], batch_size: int) -> None:
        device = next((v.device for v in scalars.values() if isinstance(v, Tensor)), None)
        with torch.no_grad():  # plain numbers are filled in on the device (no host-to-device copy)
            values = torch.stack([v.detach().reshape(()) if isinstance(v, Tensor)
                                  else torch.full((), float(v), device=device) for v in scalars.values()]).float()
        self.names, self.values = tuple(scalars), values
        self._rows.append((self.names, values, batch_size))

    @property
    def latest(self) -> dict[str, Tensor]:
        return {} if self.values is None else dict(zip(self.names, self.values.unbind()))

    def epoch_means(self) -> dict[str, Tensor]:
        """Each name's mean over this epoch's steps that reported it, weighted by batch size
        (as Lightning's on_epoch reduction); starts the next epoch empty."""
        groups: dict[tuple[str, ...], list[tuple[Tensor, int]]] = {}
        for names, values, batch_size in self._rows:
            groups.setdefault(names, []).append((values, batch_size))
        sums: dict[str, Tensor] = {}
        weights: dict[str, int] = {}
        for names, rows in groups.items():
            sizes = torch.tensor([size for _, size in rows], dtype=torch.float32, device=rows[0][0].device)
            total = (torch.stack([values for values, _ in rows]) * sizes[:, None]).sum(0)
            for name, value in zip(names, total.unbind()):
                sums[name] = sums.get(name, 0.0) + value
                weights[name] = weights.get(name, 0) + sum(size for _, size in rows)
        self._rows = []
        return {name: sums[name] / weights[name] for name in sums}
