"""Ensemble artifacts: K fp16 member networks, their averaged probabilities, `fast`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model.artifact import load_artifact, load_members, save_ensemble
from model.ensemble import mean_probabilities, member_probabilities
from model.manifest import MANIFEST_NAME, ArtifactError, Manifest, members_sha256, read_manifest
from model.network import build_network
from model.postprocessing import Rule
from model.predictor import Predictor
from tests.model.conftest import TINY_ARCH


def tiny_networks(k: int) -> list[torch.nn.Module]:
    torch.manual_seed(0)
    return [build_network(TINY_ARCH).eval() for _ in range(k)]


@pytest.fixture
def ensemble(tmp_path: Path) -> Path:
    manifest = Manifest(version="pending", trained=False, architecture=dict(TINY_ARCH))
    manifest.metrics = {"validation": {"dice": 0.5}}
    return save_ensemble(tiny_networks(3), manifest, tmp_path, folds=[0, 1, None])


def images(seed: int = 0) -> list[np.ndarray]:
    """Sizes that are multiples of the tiny network's stride (4): no padding, and at
    input scale 1 no resampling, so a member's map is its sigmoid on the image itself."""
    rng = np.random.default_rng(seed)
    return [rng.random((h, 24)).astype(np.float32) for h in (32, 32, 40)]


def by_hand(networks: list[torch.nn.Module], img: np.ndarray, flip: bool) -> np.ndarray:
    """The mean over members of sigmoid(member(image)), flip-averaged per member."""
    x = torch.from_numpy(img)[None, None]
    maps = []
    with torch.inference_mode():
        for net in networks:
            p = torch.sigmoid(net(x))[0, 0].numpy()
            if flip:
                mirrored = torch.sigmoid(net(torch.flip(x, dims=[-1])))[0, 0].numpy()
                p = 0.5 * (p + mirrored[:, ::-1])
            maps.append(p)
    return np.mean(maps, axis=0)


def test_mean_of_members_equals_the_hand_computed_mean() -> None:
    # Two "members" with constant logits: sigmoid(0) = 0.5 and sigmoid(ln 3) = 0.75.
    batch = torch.zeros((1, 1, 2, 2))
    zero = lambda x: torch.zeros_like(x)  # noqa: E731
    ln3 = lambda x: torch.full_like(x, float(np.log(3.0)))  # noqa: E731
    got = mean_probabilities([zero, ln3], batch, flip_tta=False)
    torch.testing.assert_close(got, torch.full((1, 1, 2, 2), 0.625))
    # A member whose logits are the input: flip TTA averages p(x) and mirror(p(mirror x)),
    # which for an identity member is p(x) itself; the mean with a constant 0.5 member.
    x = torch.tensor([[[[0.0, np.log(3.0)], [np.log(3.0), 0.0]]]], dtype=torch.float32)
    ident = lambda t: t  # noqa: E731
    torch.testing.assert_close(member_probabilities(ident, x, True), torch.sigmoid(x))
    got = mean_probabilities([ident, zero], x, flip_tta=True)
    torch.testing.assert_close(got, torch.tensor([[[[0.5, 0.625], [0.625, 0.5]]]]))
    # One member: its probabilities as they are.
    torch.testing.assert_close(mean_probabilities([ident], x, False), torch.sigmoid(x))
    with pytest.raises(ValueError, match="at least one"):
        mean_probabilities([], x, False)


def test_ensemble_manifest_round_trip(ensemble: Path) -> None:
    manifest = read_manifest(ensemble)
    assert manifest.version.startswith("attention-unet-ens-")
    assert manifest.version.endswith(manifest.weights_sha256[:8])
    assert ensemble.name == manifest.version
    assert [m["weights"] for m in manifest.members] == [
        f"member-{k}.safetensors" for k in (1, 2, 3)
    ]
    assert [m["fold"] for m in manifest.members] == [0, 1, None]
    assert manifest.weights_sha256 == members_sha256([m["sha256"] for m in manifest.members])
    assert manifest.n_members == 3
    assert manifest.architecture == TINY_ARCH
    assert manifest.metrics == {"validation": {"dice": 0.5}}
    assert Manifest.from_dict(json.loads(manifest.to_json())) == manifest
    assert not (ensemble / "model.safetensors").exists()
    loaded, nets = load_members(ensemble)
    assert loaded == manifest
    assert len(nets) == 3
    assert not any(n.training for n in nets)
    assert all(p.dtype == torch.float32 for n in nets for p in n.parameters())


def test_members_are_stored_in_fp16_and_predict_as_the_fp32_networks(ensemble: Path) -> None:
    from safetensors.torch import load_file

    stored = load_file(str(ensemble / "member-1.safetensors"))
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    _, nets = load_members(ensemble)
    x = torch.from_numpy(images()[0])[None, None]
    with torch.inference_mode():
        for original, loaded in zip(tiny_networks(3), nets, strict=True):
            a, b = torch.sigmoid(original(x)), torch.sigmoid(loaded(x))
            torch.testing.assert_close(a, b, atol=2e-3, rtol=0)


def test_predictor_averages_the_members(ensemble: Path) -> None:
    _, nets = load_members(ensemble)
    for flip in (False, True):
        loaded = Predictor.from_artifact(ensemble, device="cpu", batch_size=2, precision="fp32")
        pred = loaded.with_settings(flip_tta=flip)
        assert pred.n_members == 3
        assert pred.version == read_manifest(ensemble).version
        for img, got in zip(images(), pred.probabilities(images()), strict=True):
            np.testing.assert_allclose(got, by_hand(nets, img, flip), atol=1e-5)


def test_members_1_is_the_first_member_alone(ensemble: Path) -> None:
    _, nets = load_members(ensemble)
    pred = Predictor.from_artifact(ensemble, device="cpu", precision="fp32", members=1)
    assert pred.n_members == 1
    assert pred.version == read_manifest(ensemble).version
    for img, got in zip(images(), pred.probabilities(images()), strict=True):
        np.testing.assert_allclose(got, by_hand(nets[:1], img, False), atol=1e-5)
    manifest, two = load_members(ensemble, max_members=2)
    assert len(two) == 2
    assert manifest.n_members == 3
    assert len(load_members(ensemble, max_members=9)[1]) == 3  # at most all of them
    with pytest.raises(ValueError, match="max_members"):
        load_members(ensemble, max_members=-1)


def test_a_corrupt_member_is_refused_naming_the_file(ensemble: Path) -> None:
    weights = ensemble / "member-2.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"member-2\.safetensors .*sha256"):
        load_members(ensemble)
    # `fast` never reads member 2: the first member still loads.
    assert len(load_members(ensemble, max_members=1)[1]) == 1


def test_a_missing_member_is_refused_naming_the_file(ensemble: Path) -> None:
    (ensemble / "member-3.safetensors").unlink()
    with pytest.raises(ArtifactError, match=r"no member-3\.safetensors in"):
        Predictor.from_artifact(ensemble, device="cpu")


def test_an_edited_member_list_is_refused(ensemble: Path) -> None:
    path = ensemble / MANIFEST_NAME
    raw = json.loads(path.read_text())
    raw["members"] = raw["members"][1:]  # drop a member: the hash over the hashes changes
    path.write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="do not match its weights_sha256"):
        load_members(ensemble)
    raw["members"] = [{"weights": "../model.safetensors", "sha256": "0" * 64}]
    path.write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="names no .safetensors file"):
        read_manifest(ensemble)


def test_load_artifact_refuses_an_ensemble(ensemble: Path) -> None:
    with pytest.raises(ArtifactError, match="ensemble of 3 networks"):
        load_artifact(ensemble)


def test_save_ensemble_refuses_overwrite_and_misfits(ensemble: Path) -> None:
    manifest = Manifest(version="x", trained=False, architecture=dict(TINY_ARCH))
    with pytest.raises(ArtifactError, match="refusing to overwrite"):
        save_ensemble(tiny_networks(2), manifest, ensemble.parent, name=ensemble.name)
    assert [p.name for p in ensemble.parent.iterdir()] == [ensemble.name]  # no temp left
    other = build_network({**TINY_ARCH, "channels": [4, 8, 32]})
    with pytest.raises(ArtifactError, match="member 2 does not fit"):
        save_ensemble([tiny_networks(1)[0], other], manifest, ensemble.parent)
    with pytest.raises(ValueError, match="2 folds for 1 networks"):
        save_ensemble(tiny_networks(1), manifest, ensemble.parent, folds=[0, 1])


def test_a_single_network_artifact_loads_and_predicts_as_before(tiny_artifact: Path) -> None:
    manifest, nets = load_members(tiny_artifact)
    _, net = load_artifact(tiny_artifact)
    assert manifest.members == []
    assert manifest.n_members == 1
    assert len(nets) == 1
    assert "members" not in json.loads((tiny_artifact / MANIFEST_NAME).read_text())
    pred = Predictor.from_artifact(tiny_artifact, device="cpu", precision="fp32", members=1)
    assert pred.n_members == 1
    for img, got in zip(images(), pred.probabilities(images()), strict=True):
        np.testing.assert_allclose(got, by_hand([net], img, False), atol=1e-5)
    # Training's call: in-memory networks with inference settings, no artifact.
    same = Predictor([net], pred.inference, Rule(0.5))
    for a, b in zip(same.probabilities(images()), pred.probabilities(images()), strict=True):
        np.testing.assert_array_equal(a, b)
