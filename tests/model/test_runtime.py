"""The runtime setting: auto picks OpenVINO on a CPU where it is installed, torch on
CUDA and where OpenVINO is missing; OpenVINO's telemetry stays off."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model import runtime
from model.predictor import Predictor

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_auto_picks_the_measured_faster_runtime_per_device() -> None:
    assert runtime.resolve_runtime("auto", CUDA) == "torch"
    expected = "openvino" if runtime.openvino_installed() else "torch"
    assert runtime.resolve_runtime("auto", CPU) == expected
    assert runtime.resolve_runtime("torch", CPU) == "torch"
    with pytest.raises(ValueError, match="runs on the CPU"):
        runtime.resolve_runtime("openvino", CUDA)
    with pytest.raises(ValueError, match="unknown runtime 'onnx'"):
        runtime.resolve_runtime("onnx", CPU)


def test_without_openvino_auto_falls_back_to_torch_and_openvino_is_refused_clearly(
    monkeypatch: pytest.MonkeyPatch, tiny_artifact: Path
) -> None:
    monkeypatch.setattr(runtime, "openvino_installed", lambda: False)
    assert runtime.resolve_runtime("auto", CPU) == "torch"
    with pytest.raises(ValueError, match=r"pip install 'tumorseg\[openvino\]'"):
        runtime.resolve_runtime("openvino", CPU)
    pred = Predictor.from_artifact(tiny_artifact, device="cpu", runtime="auto")
    assert pred.inference.runtime == "torch"
    assert pred.masks([np.zeros((40, 40), np.float32)])[0].shape == (40, 40)


@pytest.mark.skipif(not runtime.openvino_installed(), reason="OpenVINO is not installed")
def test_openvino_members_give_torch_s_probabilities_and_telemetry_stays_off(
    tiny_artifact: Path, tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    images = [rng.random((h, 40)).astype(np.float32) for h in (33, 64)]
    want = Predictor.from_artifact(tiny_artifact, device="cpu", precision="fp32")
    got = Predictor.from_artifact(
        tiny_artifact, device="cpu", precision="fp32", runtime="openvino", cache_dir=tmp_path
    )
    assert got.inference.runtime == "openvino"
    for a, b in zip(got.probabilities(images), want.probabilities(images), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
    (cached,) = tmp_path.glob("*.xml")
    again = Predictor.from_artifact(
        tiny_artifact, device="cpu", precision="fp32", runtime="openvino", cache_dir=tmp_path
    )
    assert list(tmp_path.glob("*.xml")) == [cached], "converted once, then read back"
    np.testing.assert_allclose(again.probabilities(images)[0], want.probabilities(images)[0],
                               atol=1e-4)  # fmt: skip
    import openvino_telemetry

    assert openvino_telemetry.Telemetry().consent is False
