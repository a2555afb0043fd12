from pathlib import Path

import numpy as np
import pytest
import torch

from model.bucketing import padded
from model.postprocessing import Rule, to_mask
from model.predictor import Predictor, forward, resolve_batch_size, resolve_device


def images(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((h, 40)).astype(np.float32) for h in (33, 64, 50, 97)]


def test_masks_have_input_shapes_and_are_binary(tiny_artifact: Path) -> None:
    pred = Predictor.from_artifact(tiny_artifact, device="cpu", batch_size=2, precision="fp32")
    imgs = images()
    masks = pred.masks(imgs)
    assert [m.shape for m in masks] == [i.shape for i in imgs]
    assert all(m.dtype == bool for m in masks)
    _, batches = pred.plan(imgs)
    assert len(batches) >= 2
    assert sorted(i for b in batches for i in b.indices) == [0, 1, 2, 3]


def test_batches_come_with_levels_and_probabilities_and_skip_what_is_asked(
    tiny_artifact: Path,
) -> None:
    pred = Predictor.from_artifact(tiny_artifact, device="cpu", batch_size=2, precision="fp32")
    imgs = images()
    probs = pred.probabilities(imgs)
    seen = [p for batch in pred.iter_batches(imgs, skip=lambda i: i == 2) for p in batch]
    assert sorted(p.index for p in seen) == [0, 1, 3]
    for p in seen:
        assert p.levels.dtype == p.probabilities.dtype == np.uint8
        want = np.clip(np.rint(probs[p.index] * 255), 0, 255)
        np.testing.assert_allclose(p.probabilities, want, atol=1)
        np.testing.assert_array_equal(p.levels, probs[p.index] > pred.rule.threshold)


def test_masks_thresholded_on_the_device_equal_the_host_post_processing(
    tiny_artifact: Path,
) -> None:
    # `masks` compares on the device and copies levels out; the result must be
    # `to_mask` on the probability maps, with and without component removal.
    loaded = Predictor.from_artifact(tiny_artifact, device="cpu", batch_size=2, precision="fp32")
    imgs = images()
    probs = loaded.probabilities(imgs)
    threshold = float(np.median(np.concatenate([p.ravel() for p in probs])))
    removed = False
    for min_px in (0, 3):
        pred = loaded.with_settings(Rule(threshold, min_px))
        want = [to_mask(p, threshold, min_px) for p in probs]
        got = pred.masks(imgs)
        for g, w, p in zip(got, want, probs, strict=True):
            assert g.dtype == bool
            assert g.shape == p.shape
            np.testing.assert_array_equal(g, w)
            assert w.any()
            assert not w.all()
            removed |= not np.array_equal(w, p > threshold)
    assert removed  # some components were small enough to go


def test_the_peak_rule_on_the_device_equals_the_host_post_processing(
    tiny_artifact: Path,
) -> None:
    loaded = Predictor.from_artifact(tiny_artifact, device="cpu", batch_size=2, precision="fp32")
    imgs = images(3)
    probs = loaded.probabilities(imgs)
    flat = np.concatenate([p.ravel() for p in probs])
    threshold, peak = float(np.quantile(flat, 0.5)), float(np.quantile(flat, 0.95))
    pred = loaded.with_settings(Rule(threshold, 2, peak))
    want = [to_mask(p, threshold, 2, peak) for p in probs]
    got = pred.masks(imgs)
    assert any(w.any() for w in want)
    assert sum(int(w.sum()) for w in want) < sum(int(to_mask(p, threshold, 2).sum()) for p in probs)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_batched_equals_one_at_a_time_within_a_bucket(tiny_artifact: Path) -> None:
    # Images that pad to the same shape see exactly the same input in a batch as alone.
    # (Across buckets only the amount of zero padding below the body differs; the golden
    # test checks that this leaves real masks unchanged.)
    pred = Predictor.from_artifact(tiny_artifact, device="cpu", batch_size=4, precision="fp32")
    rng = np.random.default_rng(1)
    imgs = [rng.random((h, 40)).astype(np.float32) for h in (37, 38, 39, 40)]
    batched = pred.probabilities(imgs)
    single = [pred.probabilities([i])[0] for i in imgs]
    for b, s in zip(batched, single, strict=True):
        np.testing.assert_allclose(b, s, atol=1e-4)


def test_flip_tta_and_half_scale_keep_shapes(tiny_artifact: Path) -> None:
    loaded = Predictor.from_artifact(tiny_artifact, device="cpu", precision="fp32")
    pred = loaded.with_settings(flip_tta=True, input_scale=0.5)
    probs = pred.probabilities(images())
    assert [p.shape for p in probs] == [i.shape for i in images()]
    assert all(p.min() >= 0.0 and p.max() <= 1.0 for p in probs)


def test_half_scale_probabilities_are_resample_network_resample_back(
    tiny_artifact: Path,
) -> None:
    # The predictor resamples on its device, in batches, through one copy each way; the
    # result must be the plain host pipeline of model.preprocessing.resample.
    from model.preprocessing import resample

    loaded = Predictor.from_artifact(tiny_artifact, device="cpu", batch_size=1, precision="fp32")
    pred = loaded.with_settings(input_scale=0.5)
    multiple = pred.inference.multiple
    for img, got in zip(images(), pred.probabilities(images()), strict=True):
        small = resample(img, 0.5)
        h, w = small.shape
        x = torch.zeros(1, 1, padded(h, multiple), padded(w, multiple))
        x[0, 0, :h, :w] = torch.from_numpy(small)
        with torch.inference_mode():
            p = torch.sigmoid(forward(pred.networks[0], x, None))[0, 0, :h, :w]
        want = np.clip(resample(p.numpy(), 1.0, img.shape), 0.0, 1.0)
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_non_2d_input_is_refused(tiny_artifact: Path) -> None:
    pred = Predictor.from_artifact(tiny_artifact, device="cpu")
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        pred.masks([np.zeros((2, 32, 32), np.float32)])


def test_device_switch_auto_and_explicit_cpu() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_masks_match_cpu(tiny_artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The device is the one difference: one image per batch on both (the devices' default
    # batch sizes pad these mixed heights differently) and true fp32 convolutions on the
    # GPU (cuDNN rounds fp32 through TF32 by default).
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    cpu = Predictor.from_artifact(tiny_artifact, device="cpu", batch_size=1, precision="fp32")
    gpu = Predictor.from_artifact(tiny_artifact, device="cuda", batch_size=1, precision="fp32")
    # the GPU resamples on the device: cover it
    cpu, gpu = cpu.with_settings(input_scale=0.5), gpu.with_settings(input_scale=0.5)
    for a, b in zip(cpu.probabilities(images()), gpu.probabilities(images()), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-3)
    # Masks are thresholded on the GPU and copied out as bool: the host's masks of the
    # same GPU's maps (deterministic convolutions, so both passes compute the same maps).
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    probs = gpu.probabilities(images())
    threshold = float(np.median(np.concatenate([p.ravel() for p in probs])))
    gpu = gpu.with_settings(Rule(threshold))
    for m, p in zip(gpu.masks(images()), probs, strict=True):
        np.testing.assert_array_equal(m, to_mask(p, threshold))


def test_batch_size_zero_means_the_measured_best_for_the_device(tiny_artifact: Path) -> None:
    assert resolve_batch_size(0, torch.device("cpu")) == 1
    assert resolve_batch_size(0, torch.device("cpu"), torch.bfloat16) == 4
    assert resolve_batch_size(0, torch.device("cuda"), torch.bfloat16) == 32
    assert resolve_batch_size(4, torch.device("cpu")) == 4
    with pytest.raises(ValueError, match="batch size"):
        resolve_batch_size(-1, torch.device("cpu"))
    pred = Predictor.from_artifact(tiny_artifact, device="cpu", precision="fp32")
    assert pred.inference.batch_size == 1
