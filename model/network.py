"""The segmentation networks, built from manifest arguments: the attention U-Net on an
EfficientNet-Lite0 encoder in `model/efficientnet_unet.py` (the released ensemble's
members) and MONAI's 2D Attention U-Net (the previous single network)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.networks.nets import AttentionUnet

from model.efficientnet_unet import EfficientAttentionUnet

DEFAULT_ARCHITECTURE: dict[str, Any] = {
    "name": "AttentionUnet",
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 1,
    "channels": [16, 32, 64, 128, 256],
    "strides": [2, 2, 2, 2],
    "dropout": 0.0,
}

#: Attention-gated decoder on EfficientNet-Lite0 (five stride-2 stages), which a training
#: can start from ImageNet (`tumorseg train --pretrained imagenet`).
EFFICIENT_ARCHITECTURE: dict[str, Any] = {
    "name": "EfficientAttentionUnet",
    "encoder": "efficientnet-lite0",
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 1,
    "decoder_channels": [128, 64, 48, 32, 16],
    "strides": [2, 2, 2, 2, 2],
    "deep_supervision": 0,
}

ARCHITECTURES: dict[str, dict[str, Any]] = {
    "attention-unet": DEFAULT_ARCHITECTURE,
    "efficient-attention-unet": EFFICIENT_ARCHITECTURE,
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
        The network (in training mode; with `deep_supervision` it then returns its
        auxiliary outputs too).

    Raises:
        ValueError: The architecture names another network or has inconsistent arguments.
    """
    name = architecture.get("name")
    if name == "EfficientAttentionUnet":
        if architecture.get("encoder") != "efficientnet-lite0":
            raise ValueError(f"unsupported encoder {architecture.get('encoder')!r}")
        if [int(s) for s in architecture["strides"]] != [2, 2, 2, 2, 2]:
            raise ValueError("EfficientAttentionUnet has strides [2, 2, 2, 2, 2]")
        return EfficientAttentionUnet(
            in_channels=int(architecture["in_channels"]),
            out_channels=int(architecture["out_channels"]),
            decoder_channels=list(architecture["decoder_channels"]),
            deep_supervision=int(architecture.get("deep_supervision", 0)),
        )
    if name != "AttentionUnet":
        raise ValueError(f"unsupported network {name!r}")
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
