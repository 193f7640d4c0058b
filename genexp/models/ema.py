"""An exponential moving average of a network's weights, for any family: a GAN's generator
(Karras et al. 2018), a diffusion model's denoiser (Ho et al. 2020). Samples and evaluation
use the average, training updates the network.

The first update copies the network; after n updates the decay is (1 + n) / (10 + n), up to
`decay` (as TensorFlow's
ExponentialMovingAverage with num_updates), so that early samples do not remember the random
initial weights. Only parameters are averaged; buffers (batch-norm statistics, a noise
schedule) are copied from the network, since averaging them is meaningless or harmful.
"""

import copy

import torch
from torch import Tensor, nn


class EMA(nn.Module):
    def __init__(self, net: nn.Module, decay: float) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(net).requires_grad_(False)
        # Its name in checkpoints is the one torch's AveragedModel uses.
        self.register_buffer("n_averaged", torch.zeros((), dtype=torch.long))

    def current_decay(self) -> float:
        """0 for the first update (the average starts at the trained weights), then the warm-up."""
        n = int(self.n_averaged)
        return 0.0 if n == 0 else min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        """Move the average towards `net`'s weights (after an optimizer step)."""
        decay = self.current_decay()
        for averaged, current in zip(self.module.parameters(), net.parameters()):
            averaged.lerp_(current.detach().to(averaged.dtype), 1.0 - decay)
        for kept, current in zip(self.module.buffers(), net.buffers()):
            kept.copy_(current)
        self.n_averaged += 1

    def forward(self, *args, **kwargs) -> Tensor:
        return self.module(*args, **kwargs)
