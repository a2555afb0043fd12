"""The segmentation network: MONAI's 2D Attention U-Net, built from manifest arguments."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.networks.nets import AttentionUnet

DEFAULT_ARCHITECTURE: dict[str, Any] = {
    "name": "AttentionUnet",
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 1,
    "channels": [16, 32, 64, 128, 256],
    "strides": [2, 2, 2, 2],
    "dropout": 0.0,
}


def stride_multiple(architecture: Mapping[str, Any]) -> int:
    """The factor that input height and width must be multiples of."""
    total = 1
    for s in architecture["strides"]:
        total *= int(s)
    return total


def build_network(architecture: Mapping[str, Any]) -> torch.nn.Module:
    """Build an untrained network from manifest architecture arguments.

    Args:
        architecture: Keys as in `DEFAULT_ARCHITECTURE`.

    Returns:
        The MONAI AttentionUnet.

    Raises:
        ValueError: The architecture names another network or has inconsistent arguments.
    """
    if architecture.get("name") != "AttentionUnet":
        raise ValueError(f"unsupported network {architecture.get('name')!r}")
    channels = list(architecture["channels"])
    strides = list(architecture["strides"])
    if len(strides) != len(channels) - 1:
        raise ValueError(
            f"architecture needs len(strides) == len(channels) - 1, got {strides} / {channels}"
        )
    return AttentionUnet(
        spatial_dims=int(architecture["spatial_dims"]),
        in_channels=int(architecture["in_channels"]),
        out_channels=int(architecture["out_channels"]),
        channels=channels,
        strides=strides,
        dropout=float(architecture.get("dropout", 0.0)),
    )
