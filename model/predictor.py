"""Batched whole-image inference: load an artifact once, predict many times.

An ensemble artifact's members each run once per batch; the maps are the mean of their
probabilities (`model.ensemble`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from model.artifact import load_members
from model.bucketing import Batch, make_batches, padding_waste
from model.ensemble import mean_probabilities
from model.manifest import Manifest
from model.network import stride_multiple
from model.postprocessing import keep_components, remove_small_components
from model.preprocessing import resample_tensor, scaled_size

log = logging.getLogger(__name__)

# Above this many padded pixels per image, fall back to sliding-window inference.
MAX_WHOLE_IMAGE_PIXELS = 2048 * 2048
SLIDING_WINDOW_ROI = (512, 512)


def _split(flat: np.ndarray, maps: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """One host copy of a batch's concatenated maps, cut back into one array per map."""
    out, o = [], 0
    for m in maps:
        out.append(flat[o : o + m.numel()].reshape(m.shape))
        o += m.numel()
    return out


@dataclass(frozen=True)
class PredictStats:
    """What the last `predict` call did."""

    n_images: int
    n_batches: int
    seconds: float
    padding_waste: float


def resolve_device(device: str) -> torch.device:
    """'auto' means CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast runs natively here (CUDA, or a CPU with AVX-512 BF16 / AMX)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


#: Images per forward pass that bench/inference.py measured fastest (docs/BENCHMARKS.md),
#: by (device type, autocast dtype): on CPU one in fp32, where larger batches lose to cache
#: effects, and 4 in native bf16 (AVX-512 BF16); 32 on an H200, the largest whose masks
#: still agree with one-at-a-time masks at Dice >= 0.99 with the released artifact (0.995
#: in bf16 over 64 patients, 112 studies/s against 81 at batch 8; 128 agreed at 0.983:
#: more height padding per bucket. An earlier artifact with flip TTA agreed at 0.979 at 32).
BEST_BATCH_SIZE: dict[tuple[str, torch.dtype | None], int] = {
    ("cpu", None): 1,
    ("cpu", torch.bfloat16): 4,
    ("cuda", None): 32,
    ("cuda", torch.bfloat16): 32,
    ("cuda", torch.float16): 32,
}


def resolve_batch_size(
    batch_size: int, device: torch.device, autocast_dtype: torch.dtype | None = None
) -> int:
    """0 means the measured best for the device type and precision."""
    if batch_size < 0:
        raise ValueError(f"batch size must be >= 0, got {batch_size}")
    return batch_size or BEST_BATCH_SIZE.get((device.type, autocast_dtype), 1)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for 'auto' | 'bf16' | 'fp16' | 'fp32'; None means fp32."""
    if precision == "auto":
        return torch.bfloat16 if bf16_supported(device) else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def _prepare(network: torch.nn.Module, device: torch.device, compile: bool) -> torch.nn.Module:
    """A network on `device` in eval mode (channels_last on a CPU), compiled if asked."""
    net = network.to(device).eval()
    if device.type == "cpu":
        net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return torch.compile(net) if compile else net  # type: ignore[return-value]


class Predictor:
    """A loaded network (or an ensemble's members) plus its manifest's post-processing,
    ready to segment batches.

    Build it with `Predictor.from_artifact`; every attribute is set by the constructor.
    """

    def __init__(
        self,
        manifest: Manifest,
        network: torch.nn.Module | Sequence[torch.nn.Module],
        device: torch.device,
        batch_size: int = 8,
        autocast_dtype: torch.dtype | None = None,
        compile: bool = False,
    ) -> None:
        self.manifest = manifest
        self.device = device
        self.batch_size = batch_size
        self.autocast_dtype = autocast_dtype
        self.multiple = stride_multiple(manifest.architecture)
        self.threshold = float(manifest.threshold)
        self.min_component_px = int(manifest.postprocessing.get("min_component_px", 0))
        #: The peak rule: a component is kept only if it holds a pixel at or above this
        #: probability; None when the manifest sets none (or one at or below the threshold).
        peak = float(manifest.postprocessing.get("min_peak", 0.0))
        self.min_peak: float | None = peak if peak > self.threshold else None
        self.flip_tta = bool(manifest.postprocessing.get("flip_tta", False))
        self.input_scale = float(manifest.preprocessing.get("input_scale", 1.0))
        nets = [network] if isinstance(network, torch.nn.Module) else list(network)
        if not nets:
            raise ValueError("a predictor needs at least one network")
        #: The member networks, the first one first; their probabilities are averaged.
        self.networks: list[torch.nn.Module] = [_prepare(n, device, compile) for n in nets]
        self.last_run = PredictStats(0, 0, 0.0, 0.0)

    @classmethod
    def from_artifact(
        cls,
        path: Path | str | None = None,
        device: str = "auto",
        batch_size: int = 0,
        precision: str = "auto",
        compile: bool = False,
        members: int = 0,
    ) -> Predictor:
        """Load an artifact (None = the bundled default) and build a ready predictor.

        Args:
            path: Artifact directory.
            device: 'auto', 'cpu', 'cuda', 'cuda:1', ...
            batch_size: Images per forward pass; 0 = the measured best for the device.
            precision: 'auto' (bf16 where native, else fp32), 'bf16', 'fp16' or 'fp32'.
            compile: Wrap the network in `torch.compile`.
            members: Run at most this many of an ensemble's members, the first ones
                (1 = the `fast` setting for CPU-only sites); 0 = all.

        Raises:
            ValueError: A negative `members`.
            model.manifest.ArtifactError: The artifact is missing or corrupt.
        """
        manifest, networks = load_members(Path(path) if path is not None else None, members)
        dev = resolve_device(device)
        dtype = resolve_precision(precision, dev)
        return cls(
            manifest,
            networks,
            dev,
            resolve_batch_size(batch_size, dev, dtype),
            dtype,
            compile,
        )

    @property
    def version(self) -> str:
        """The manifest's version (an ensemble's, however many members run)."""
        return self.manifest.version

    @property
    def n_members(self) -> int:
        """Member networks this predictor runs (1 for a single network, or `fast`)."""
        return len(self.networks)

    @property
    def network(self) -> torch.nn.Module:
        """The first member network (the only one of a single-network artifact)."""
        return self.networks[0]

    @property
    def trained(self) -> bool:
        return bool(self.manifest.trained)

    def logits(self, batch: torch.Tensor, member: int = 0) -> torch.Tensor:
        """Logits for a (B, 1, H, W) float batch already on the device (one member network
        alone, in the predictor's precision and memory format; call under
        `torch.inference_mode`)."""
        network = self.networks[member]
        if self.device.type == "cpu":
            batch = batch.contiguous(memory_format=torch.channels_last)
        h, w = batch.shape[-2:]
        with torch.autocast(
            device_type=self.device.type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        ):
            if h * w > MAX_WHOLE_IMAGE_PIXELS:
                from monai.inferers import sliding_window_inference

                out = sliding_window_inference(
                    batch,
                    SLIDING_WINDOW_ROI,
                    sw_batch_size=self.batch_size,
                    predictor=network,
                    overlap=0.25,
                )
                assert isinstance(out, torch.Tensor)
                logits = out
            else:
                logits = network(batch)
        return logits.float()

    def _probabilities_batch(self, batch: torch.Tensor) -> torch.Tensor:
        members = [partial(self.logits, member=k) for k in range(len(self.networks))]
        return mean_probabilities(members, batch, self.flip_tta)

    def _upload(self, arrays: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """float32 tensors of `arrays` on the device; to a GPU through one pinned buffer
        and one asynchronous copy."""
        if self.device.type != "cuda":
            return [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in arrays]
        flat = torch.empty(sum(a.size for a in arrays), dtype=torch.float32, pin_memory=True)
        host, offsets = flat.numpy(), [0]
        for a in arrays:
            host[offsets[-1] : offsets[-1] + a.size] = a.ravel()
            offsets.append(offsets[-1] + a.size)
        dev = flat.to(self.device, non_blocking=True)
        return [dev[o : o + a.size].view(a.shape) for o, a in zip(offsets, arrays, strict=False)]

    def _download(
        self, maps: Sequence[torch.Tensor], threshold: float | None, peak: float | None = None
    ) -> list[np.ndarray]:
        """Host arrays of `maps`, one copy per batch: the probabilities clipped to [0, 1],
        or with a threshold the bool masks above it, compared on the device (a quarter of
        the bytes to copy, and no float maps to handle on the host). With a threshold and
        a `peak` too, uint8 levels: 1 above the threshold, 2 at or above the peak."""
        if threshold is None:
            flat = torch.cat([m.reshape(-1) for m in maps]).clamp_(0.0, 1.0).cpu().numpy()
        elif peak is None:
            flat = torch.cat([m.reshape(-1) > threshold for m in maps]).cpu().numpy()
        else:
            flat = (
                torch.cat(
                    [(m > threshold).to(torch.uint8) + (m >= peak).to(torch.uint8) for m in maps]
                )
                .reshape(-1)
                .cpu()
                .numpy()
            )
        return _split(flat, maps)

    def _download_quantized(self, maps: Sequence[torch.Tensor]) -> list[np.ndarray]:
        """Host uint8 copies of `maps`: round(255 × probability), one copy per batch."""
        flat = (
            torch.cat([m.reshape(-1) for m in maps])
            .clamp(0.0, 1.0)
            .mul_(255.0)
            .round_()
            .to(torch.uint8)
            .cpu()
            .numpy()
        )
        return _split(flat, maps)

    def iter_probabilities(self, images: Sequence[np.ndarray]) -> Iterator[tuple[int, np.ndarray]]:
        """Tumor probability maps as each batch finishes, so callers can encode the first
        masks while the network computes the next batch.

        Args:
            images: float32 (H, W) arrays from `model.preprocessing.decode_image`.

        Yields:
            (index into `images`, float32 (H, W) probabilities in [0, 1]).
        """
        for b, maps in self._iter_device_maps(images):
            yield from zip(b.indices, self._download(maps, None), strict=True)

    def _iter_device_maps(
        self, images: Sequence[np.ndarray]
    ) -> Iterator[tuple[Batch, list[torch.Tensor]]]:
        """Each batch with its probability maps, on the device at the input sizes."""
        start = time.perf_counter()
        for img in images:
            if img.ndim != 2:
                raise ValueError(f"expected (H, W) images, got shape {img.shape}")
        # Resampling to the network's scale and back runs on the device, beside the
        # network: on a GPU the host only copies decoded images in and maps out, one
        # transfer each way per batch.
        shapes = [scaled_size(img.shape, self.input_scale) for img in images]
        batches = make_batches(shapes, self.batch_size, self.multiple)
        for b in batches:
            yield b, self._device_maps(images, shapes, b)
        self.last_run = PredictStats(
            len(images), len(batches), time.perf_counter() - start, padding_waste(batches, shapes)
        )

    def _device_maps(
        self, images: Sequence[np.ndarray], shapes: list[tuple[int, int]], b: Batch
    ) -> list[torch.Tensor]:
        """One batch: copy in, resample to the network's scale, network, resample back.
        Returns the batch's probability maps on the device, each at its input's size."""
        with torch.inference_mode():
            fulls = self._upload([images[i] for i in b.indices])
            batch = torch.zeros(
                (len(b.indices), 1, b.height, b.width), dtype=torch.float32, device=self.device
            )
            for j, i in enumerate(b.indices):
                h, w = shapes[i]
                batch[j, 0, :h, :w] = resample_tensor(fulls[j], (h, w))
            prob = self._probabilities_batch(batch)
            return [
                resample_tensor(prob[j, 0, : shapes[i][0], : shapes[i][1]], images[i].shape[:2])
                for j, i in enumerate(b.indices)
            ]

    def _run_batch(
        self,
        images: Sequence[np.ndarray],
        shapes: list[tuple[int, int]],
        b: Batch,
        threshold: float | None = None,
        peak: float | None = None,
    ) -> list[tuple[int, np.ndarray]]:
        """One batch to the host: (index into `images`, probabilities, or with a threshold
        the masks or levels of `_download`) pairs."""
        maps = self._device_maps(images, shapes, b)
        return list(zip(b.indices, self._download(maps, threshold, peak), strict=True))

    def probabilities(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Tumor probability maps, one per image, each the size of its input."""
        out: dict[int, np.ndarray] = dict(self.iter_probabilities(images))
        return [out[i] for i in range(len(images))]

    def _mask(self, above: np.ndarray) -> np.ndarray:
        """The mask from `_download`'s output with this predictor's threshold and peak."""
        if self.min_peak is None:
            return remove_small_components(above, self.min_component_px)
        return keep_components(above >= 1, self.min_component_px, seeds=above == 2)

    def iter_predict(self, images: Sequence[np.ndarray]) -> Iterator[tuple[int, np.ndarray]]:
        """Binary masks (bool, input size) as each batch finishes: (index, mask) pairs.

        The same masks as `model.postprocessing.to_mask` on `iter_probabilities`, but
        thresholded on the device, so only the component rules run on the host."""
        for b, maps in self._iter_device_maps(images):
            masks = self._download(maps, self.threshold, self.min_peak)
            for i, above in zip(b.indices, masks, strict=True):
                yield i, self._mask(above)

    def iter_predict_with_probabilities(
        self, images: Sequence[np.ndarray]
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """`iter_predict`'s masks with their probability maps as uint8, round(255 × p):
        (index, mask, quantized probabilities). The lesions' peak probabilities read them,
        at a quarter of float32's bytes to copy."""
        for b, maps in self._iter_device_maps(images):
            above = self._download(maps, self.threshold, self.min_peak)
            quantized = self._download_quantized(maps)
            for i, a, q in zip(b.indices, above, quantized, strict=True):
                yield i, self._mask(a), q

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Binary tumor masks (bool, input size) after threshold and post-processing."""
        out: dict[int, np.ndarray] = dict(self.iter_predict(images))
        return [out[i] for i in range(len(images))]
