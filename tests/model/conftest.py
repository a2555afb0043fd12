"""Shared fixtures for model tests: a tiny random artifact that builds in milliseconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model.artifact import save_artifact
from model.manifest import Manifest
from model.network import build_network

TINY_ARCH = {
    "name": "AttentionUnet",
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 1,
    "channels": [4, 8, 16],
    "strides": [2, 2],
    "dropout": 0.0,
}


@pytest.fixture
def tiny_artifact(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    manifest = Manifest(version="pending", trained=False, architecture=dict(TINY_ARCH))
    return save_artifact(build_network(TINY_ARCH), manifest, tmp_path)
