"""A deeper 2D Attention U-Net with instance norm and deep supervision.

The seed's family (attention gates on the skip connections, Oktay et al. 2018), built for
whole-image training: six levels (a receptive field that spans the trunk at half scale),
instance norm (batches of a few whole studies make batch statistics noisy), leaky ReLU,
and auxiliary 1x1 heads on the two decoder levels below full resolution. In training
mode the network returns the full-resolution logits followed by the auxiliary ones
(halving in size); in eval mode only the full-resolution logits, so inference code sees
the same interface as MONAI's `AttentionUnet`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from torch import nn


def _conv(in_ch: int, out_ch: int, stride: int, dropout: float) -> Convolution:
    return Convolution(
        spatial_dims=2,
        in_channels=in_ch,
        out_channels=out_ch,
        strides=stride,
        kernel_size=3,
        act=("leakyrelu", {"negative_slope": 0.01, "inplace": True}),
        norm=("instance", {"affine": True}),
        dropout=dropout,
    )


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions; the first one strided when the block downsamples."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__(_conv(in_ch, out_ch, stride, dropout), _conv(out_ch, out_ch, 1, dropout))


class AttentionGate(nn.Module):
    """Additive attention gate: the coarser decoder signal `g` weights the skip `x`."""

    def __init__(self, channels: int, inner: int) -> None:
        super().__init__()
        self.w_g = nn.Conv2d(channels, inner, 1)
        self.w_x = nn.Conv2d(channels, inner, 1, bias=False)
        self.psi = nn.Conv2d(inner, 1, 1)

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.w_g(g) + self.w_x(x))
        return x * torch.sigmoid(self.psi(a))


class DeepAttentionUnet(nn.Module):
    """Attention U-Net with `len(channels)` levels and `deep_supervision` auxiliary heads.

    Args:
        in_channels: Input channels (1: the gray MIP).
        out_channels: Output channels (1: tumor logits).
        channels: Feature channels per level, finest first.
        strides: Downsampling stride between consecutive levels.
        deep_supervision: Auxiliary heads on the decoder levels below full resolution.
        dropout: Dropout in every convolution block.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: Sequence[int] = (16, 32, 64, 128, 256, 256),
        strides: Sequence[int] = (2, 2, 2, 2, 2),
        deep_supervision: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        channels, strides = list(channels), list(strides)
        if len(strides) != len(channels) - 1:
            raise ValueError(f"needs len(strides) == len(channels) - 1, got {strides} / {channels}")
        if not 0 <= deep_supervision < len(channels) - 1:
            raise ValueError(f"deep_supervision must be in [0, {len(channels) - 2}]")
        self.encoder = nn.ModuleList(
            [ConvBlock(in_channels, channels[0], 1, dropout)]
            + [
                ConvBlock(channels[i - 1], channels[i], strides[i - 1], dropout)
                for i in range(1, len(channels))
            ]
        )
        levels = range(len(channels) - 1)
        self.up = nn.ModuleList(
            [
                nn.ConvTranspose2d(channels[i + 1], channels[i], strides[i], strides[i])
                for i in levels
            ]
        )
        self.gates = nn.ModuleList(
            [AttentionGate(channels[i], max(1, channels[i] // 2)) for i in levels]
        )
        self.decoder = nn.ModuleList(
            [ConvBlock(2 * channels[i], channels[i], 1, dropout) for i in levels]
        )
        self.heads = nn.ModuleList(
            [nn.Conv2d(channels[i], out_channels, 1) for i in range(deep_supervision + 1)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        x = skips.pop()
        outputs: list[torch.Tensor] = []
        for i in reversed(range(len(self.decoder))):
            g = self.up[i](x)
            x = self.decoder[i](torch.cat([self.gates[i](g, skips[i]), g], dim=1))
            if i < len(self.heads) and (self.training or i == 0):
                outputs.append(self.heads[i](x))
        if not self.training:
            return outputs[-1]
        return outputs[::-1]  # full resolution first
