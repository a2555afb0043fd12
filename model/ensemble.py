"""Ensemble inference as tensor functions: each member's tumor probabilities (optionally
flip-averaged), and their mean over the members.

The predictor calls these with one logits function per member network; tests call them
with hand-made ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

#: Logits of a (B, 1, H, W) batch: one member network in the predictor's precision.
LogitsFn = Callable[[torch.Tensor], torch.Tensor]


def member_probabilities(logits: LogitsFn, batch: torch.Tensor, flip_tta: bool) -> torch.Tensor:
    """One member's sigmoid probabilities for a (B, 1, H, W) batch.

    Args:
        logits: The member's forward pass.
        batch: Network input.
        flip_tta: Average with the left-right mirror's probabilities (mirrored back), from
            one forward pass over the images and their mirrors together.

    Returns:
        (B, 1, H, W) probabilities.
    """
    if not flip_tta:
        return torch.sigmoid(logits(batch))
    both = torch.cat([batch, torch.flip(batch, dims=[-1])])
    out = logits(both)
    n = batch.shape[0]
    return 0.5 * (torch.sigmoid(out[:n]) + torch.sigmoid(torch.flip(out[n:], dims=[-1])))


def mean_probabilities(
    members: Sequence[LogitsFn], batch: torch.Tensor, flip_tta: bool
) -> torch.Tensor:
    """The mean over members of `member_probabilities`: one forward pass per member.

    A single member's probabilities are returned as they are (no arithmetic added), so a
    single-network artifact predicts exactly as before ensembles.

    Args:
        members: Each member's forward pass, the first one first.
        batch: (B, 1, H, W) network input.
        flip_tta: As in `member_probabilities`, for every member.

    Returns:
        (B, 1, H, W) probabilities.

    Raises:
        ValueError: No members.
    """
    if not members:
        raise ValueError("an ensemble needs at least one member")
    total = member_probabilities(members[0], batch, flip_tta)
    for logits in members[1:]:
        total = total + member_probabilities(logits, batch, flip_tta)
    return total if len(members) == 1 else total / len(members)
