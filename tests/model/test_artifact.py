import json
from pathlib import Path

import pytest

from model.artifact import WEIGHTS_NAME, load_artifact, save_artifact
from model.manifest import MANIFEST_NAME, ArtifactError, Manifest, read_manifest
from model.network import build_network
from tests.model.conftest import TINY_ARCH


def test_manifest_round_trip(tiny_artifact: Path) -> None:
    manifest = read_manifest(tiny_artifact)
    assert manifest.version.startswith("attention-unet-")
    assert manifest.version.endswith(manifest.weights_sha256[:8])
    assert manifest.architecture == TINY_ARCH
    again = Manifest.from_dict(json.loads(manifest.to_json()))
    assert again == manifest
    loaded, net = load_artifact(tiny_artifact)
    assert loaded == manifest
    assert not net.training


def test_save_never_overwrites(tiny_artifact: Path) -> None:
    net = build_network(TINY_ARCH)
    with pytest.raises(ArtifactError, match="refusing to overwrite"):
        save_artifact(
            net,
            Manifest(version="x", trained=False, architecture=TINY_ARCH),
            tiny_artifact.parent,
            name=tiny_artifact.name,
        )


def test_corrupt_weights_are_refused(tiny_artifact: Path) -> None:
    weights = tiny_artifact / WEIGHTS_NAME
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        load_artifact(tiny_artifact)


def test_architecture_mismatch_is_refused(tiny_artifact: Path) -> None:
    path = tiny_artifact / MANIFEST_NAME
    raw = json.loads(path.read_text())
    raw["architecture"]["channels"] = [8, 16, 32]
    path.write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="do not fit"):
        load_artifact(tiny_artifact)


def test_missing_keys_and_missing_dir_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no manifest.json"):
        load_artifact(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"version": "v"}))
    with pytest.raises(ArtifactError, match="missing keys"):
        read_manifest(tmp_path)
