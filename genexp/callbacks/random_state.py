"""Random number generator states saved in every checkpoint, so a resumed run shuffles its data
and draws its noise and dropout masks exactly as the uninterrupted run would have."""

import random

import lightning as L
import numpy as np
import torch


class RandomState(L.Callback):
    """Lightning restores weights, optimizer and loop state but not the generators (Python,
    NumPy, torch, CUDA). They are set back as soon as the checkpoint is restored, before the
    training loader draws its shuffling seed. Plain values only: checkpoints load with
    weights_only=True."""

    def state_dict(self) -> dict:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        return {
            "python": random.getstate(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state_dict: dict) -> None:
        random.setstate(state_dict["python"])
        kind, keys, pos, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        torch.set_rng_state(state_dict["torch"])
        if state_dict["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
