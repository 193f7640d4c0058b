"""Checkpoints written atomically (a kill or a full disk during a save leaves the previous file in
place, never a truncated one) and read with a clear error for a file that is not a checkpoint
of the model at hand."""

from pathlib import Path
from typing import Any

import torch
from torch import nn
from lightning.pytorch.plugins.io import TorchCheckpointIO

from genexp.errors import CheckpointError
from genexp.files import write_atomically


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint atomically (genexp.files)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        try:
            write_atomically(path, lambda file: torch.save(checkpoint, file))
        except OSError as error:
            raise CheckpointError(f"cannot write the checkpoint {path} ({error.strerror or error}); "
                                  f"the previous one is kept") from error


def read_checkpoint(path: str | Path, model: nn.Module) -> dict[str, Any]:
    """The contents of a Lightning checkpoint (weights_only=True), checked to hold `model`'s weights."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"{path} is not a readable checkpoint (torch.load: {type(error).__name__}); "
                              f"expected a .ckpt file written by genexp") from None
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a Lightning checkpoint (it holds no state_dict)")
    expected = model.state_dict()
    differences = [f"{name} {sorted(keys)[:3]}" for name, keys in (
        ("missing", expected.keys() - state.keys()),
        ("unexpected", state.keys() - expected.keys()),
        ("of another shape", {k for k in expected.keys() & state.keys() if expected[k].shape != state[k].shape}),
    ) if keys]
    if differences:
        raise CheckpointError(f"{path} holds the weights of another model than this config's "
                              f"{type(model).__name__}: weights {'; '.join(differences)}")
    return checkpoint
