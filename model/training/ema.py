"""An exponential moving average of a network's weights.

The final EMA weights are what a run ships: averaging the last few thousand steps smooths
out the noise of small whole-image batches, and it replaces picking the best checkpoint
on the very fold that is then scored (an optimistic choice).
"""

from __future__ import annotations

import copy

import torch


class EMA:
    """A shadow copy of `network` whose parameters follow it at `decay` per step.

    Early on the decay is min(decay, (1 + step) / (10 + step)), so the average is not
    dominated by the random initial weights. Buffers are copied as they are.
    """

    def __init__(self, network: torch.nn.Module, decay: float = 0.999) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.network = copy.deepcopy(network).eval()
        for p in self.network.parameters():
            p.requires_grad_(False)

    def rate(self, step: int) -> float:
        """The decay used at `step` (0-based)."""
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, network: torch.nn.Module, step: int) -> None:
        """Move the average towards `network`'s current weights."""
        d = self.rate(step)
        shadow: list[torch.Tensor] = list(self.network.parameters())
        live = [p.detach() for p in network.parameters()]
        torch._foreach_lerp_(shadow, live, 1.0 - d)
        for b, lb in zip(self.network.buffers(), network.buffers(), strict=True):
            b.copy_(lb)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.network.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.network.load_state_dict(state)
