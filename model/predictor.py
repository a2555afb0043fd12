"""Batched whole-image inference: load an artifact once, predict many times.

`Predictor` is configuration (`Inference`: device, stride, scale, flip TTA, batch size,
precision; the artifact's `Rule`) plus the member networks, over pure functions
(`forward`, `probability_maps`). An ensemble's members each run once per batch; the maps
are the mean of their probabilities (`model.ensemble`). Its surface is what the product
uses: probability maps, and per batch the masks' levels with the probabilities
(`iter_batches`, which `model/findings.py` turns into masks, metrics and lesions).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from model.artifact import load_members
from model.bucketing import Batch, make_batches
from model.ensemble import LogitsFn, mean_probabilities
from model.network import stride_multiple
from model.postprocessing import Rule, components
from model.preprocessing import resample_tensor, scaled_size
from model.runtime import openvino_members, resolve_runtime

log = logging.getLogger(__name__)


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


#: Images per forward pass that `bench.inference` measured fastest, by (device type,
#: autocast dtype); the figures are in docs/BENCHMARKS.md.
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


@dataclass(frozen=True)
class Inference:
    """How images go through the networks.

    Attributes:
        device: Where the networks run.
        multiple: Input height and width are padded to multiples of this (the stride).
        input_scale: The network's resolution as a share of the image's.
        flip_tta: Average with the left-right mirrored pass.
        batch_size: Images per forward pass.
        autocast_dtype: bf16 or fp16 autocast; None runs fp32.
        runtime: "torch", or "openvino" (the CPU only: `model/runtime.py`).
    """

    device: torch.device
    multiple: int
    input_scale: float = 1.0
    flip_tta: bool = False
    batch_size: int = 1
    autocast_dtype: torch.dtype | None = None
    runtime: str = "torch"


@dataclass(frozen=True)
class Prediction:
    """One image's prediction.

    Attributes:
        index: Its position in the images given.
        levels: uint8 (H, W): 1 above the rule's threshold, plus one for each of its
            peaks reached (`model.postprocessing.components` turns them into the mask).
        probabilities: uint8 (H, W), round(255 × probability).
    """

    index: int
    levels: np.ndarray
    probabilities: np.ndarray


def prepare(network: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """A network on `device` in eval mode (channels_last on a CPU)."""
    net = network.to(device).eval()
    if device.type == "cpu":
        net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return net


def forward(
    network: torch.nn.Module, batch: torch.Tensor, autocast_dtype: torch.dtype | None
) -> torch.Tensor:
    """float32 logits of one network for a (B, 1, H, W) batch on its device (call under
    `torch.inference_mode`)."""
    device_type = batch.device.type
    if device_type == "cpu":
        batch = batch.contiguous(memory_format=torch.channels_last)
    with torch.autocast(
        device_type=device_type,
        dtype=autocast_dtype or torch.float32,
        enabled=autocast_dtype is not None,
    ):
        logits: torch.Tensor = network(batch)
    return logits.float()


def probability_maps(
    members: Sequence[LogitsFn],
    inference: Inference,
    images: Sequence[np.ndarray],
    batch: Batch,
    shapes: Sequence[tuple[int, int]],
) -> list[torch.Tensor]:
    """One batch: copy in, resample to the network's scale, the members' mean
    probability, resample back. Returns each image's map on the device, at its size."""
    with torch.inference_mode():
        fulls = _upload([images[i] for i in batch.indices], inference.device)
        x = torch.zeros(
            (len(batch.indices), 1, batch.height, batch.width),
            dtype=torch.float32,
            device=inference.device,
        )
        for j, i in enumerate(batch.indices):
            h, w = shapes[i]
            x[j, 0, :h, :w] = resample_tensor(fulls[j], (h, w))
        prob = mean_probabilities(members, x, inference.flip_tta)
        return [
            resample_tensor(prob[j, 0, : shapes[i][0], : shapes[i][1]], images[i].shape[:2])
            for j, i in enumerate(batch.indices)
        ]


def _upload(arrays: Sequence[np.ndarray], device: torch.device) -> list[torch.Tensor]:
    """float32 tensors of `arrays` on the device; to a GPU through one pinned buffer and
    one asynchronous copy."""
    if device.type != "cuda":
        return [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in arrays]
    flat = torch.empty(sum(a.size for a in arrays), dtype=torch.float32, pin_memory=True)
    host, offsets = flat.numpy(), [0]
    for a in arrays:
        host[offsets[-1] : offsets[-1] + a.size] = a.ravel()
        offsets.append(offsets[-1] + a.size)
    dev = flat.to(device, non_blocking=True)
    return [dev[o : o + a.size].view(a.shape) for o, a in zip(offsets, arrays, strict=False)]


def host_arrays(flat: torch.Tensor, maps: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """One host copy of a batch's concatenated maps, cut back into one array per map."""
    host = flat.cpu().numpy()
    out, o = [], 0
    for m in maps:
        out.append(host[o : o + m.numel()].reshape(m.shape))
        o += m.numel()
    return out


def device_levels(maps: Sequence[torch.Tensor], rule: Rule) -> list[np.ndarray]:
    """uint8 levels of `maps` under `rule` (`postprocessing.levels`), compared on the
    device: a quarter of the bytes of the float maps to copy."""
    parts = []
    for m in maps:
        level = (m > rule.threshold).to(torch.uint8).reshape(-1)
        if rule.cuts:
            q = m.clamp(0.0, 1.0).mul(255.0).round_()
            for cut in rule.cut_levels():
                level += (q >= cut).to(torch.uint8).reshape(-1)
        parts.append(level)
    return host_arrays(torch.cat(parts), maps)


def _quantized(maps: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """uint8 copies of `maps`: round(255 × probability)."""
    flat = torch.cat([m.reshape(-1) for m in maps]).clamp(0.0, 1.0).mul_(255.0).round_()
    return host_arrays(flat.to(torch.uint8), maps)


class Predictor:
    """The member networks of an artifact with its inference settings and rule.

    Build it with `Predictor.from_artifact`, or from in-memory networks (training's
    validation); every attribute is set by the constructor and never changes.

    Args:
        networks: The member networks (their probabilities are averaged).
        inference: How images go through them.
        rule: The post-processing the levels are computed for.
        version: The artifact's version.
        trained: False for the placeholder artifact.
        keys: The members' weights hashes, which name their OpenVINO conversions in
            `cache_dir` (the openvino runtime).
        cache_dir: Where converted members are kept; None converts at every load.
    """

    def __init__(
        self,
        networks: Sequence[torch.nn.Module],
        inference: Inference,
        rule: Rule,
        version: str = "unversioned",
        trained: bool = False,
        keys: Sequence[str | None] | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        if not networks:
            raise ValueError("a predictor needs at least one network")
        self.inference = inference
        self.rule = rule
        self.version = version
        self.trained = trained
        self._keys, self._cache_dir = keys, cache_dir
        #: The member networks, the first one first.
        self.networks: list[torch.nn.Module] = [prepare(n, inference.device) for n in networks]
        #: Each member's forward pass in the runtime.
        self.members: list[LogitsFn]
        if inference.runtime == "openvino":
            self.members = list(
                openvino_members(
                    self.networks,
                    keys or [None] * len(self.networks),
                    cache_dir,
                    bf16=inference.autocast_dtype == torch.bfloat16,
                    threads=torch.get_num_threads(),
                )
            )
        else:
            dtype = inference.autocast_dtype
            self.members = [partial(forward, net, autocast_dtype=dtype) for net in self.networks]

    @classmethod
    def from_artifact(
        cls,
        path: Path | str | None = None,
        device: str = "auto",
        batch_size: int = 0,
        precision: str = "auto",
        members: int = 0,
        runtime: str = "torch",
        cache_dir: Path | None = None,
    ) -> Predictor:
        """Load an artifact (None = the released one) and build a ready predictor.

        Args:
            path: Artifact directory.
            device: 'auto', 'cpu', 'cuda', 'cuda:1', ...
            batch_size: Images per forward pass; 0 = the measured best for the device.
            precision: 'auto' (bf16 where native, else fp32), 'bf16', 'fp16' or 'fp32'.
            members: Run at most this many of an ensemble's members, the first ones
                (1 = the `fast` setting for CPU-only sites); 0 = all.
            runtime: 'torch', 'openvino' or 'auto' (OpenVINO on a CPU where it is
                installed, else torch: `model/runtime.py`); the service's setting is
                `TUMORSEG_RUNTIME`.
            cache_dir: Where OpenVINO conversions are kept (None: converted every load).

        Raises:
            ValueError: A negative `members`, or a runtime that cannot run here.
            model.manifest.ArtifactError: The artifact is missing or corrupt.
        """
        manifest, networks = load_members(Path(path) if path is not None else None, members)
        dev = resolve_device(device)
        dtype = resolve_precision(precision, dev)
        inference = Inference(
            device=dev,
            multiple=stride_multiple(manifest.architecture),
            input_scale=float(manifest.preprocessing.get("input_scale", 1.0)),
            flip_tta=bool(manifest.postprocessing.get("flip_tta", False)),
            batch_size=resolve_batch_size(batch_size, dev, dtype),
            autocast_dtype=dtype,
            runtime=resolve_runtime(runtime, dev),
        )
        rule = Rule.of(manifest.threshold, manifest.postprocessing)
        keys = [str(m["sha256"]) for m in manifest.members] or [manifest.weights_sha256]
        return cls(
            networks,
            inference,
            rule,
            manifest.version,
            bool(manifest.trained),
            keys[: len(networks)],
            cache_dir,
        )

    def with_settings(self, rule: Rule | None = None, **inference: object) -> Predictor:
        """The same networks under another rule or other inference settings."""
        return Predictor(
            self.networks,
            replace(self.inference, **inference),  # type: ignore[arg-type]
            rule or self.rule,
            self.version,
            self.trained,
            self._keys,
            self._cache_dir,
        )

    def of_members(self, members: Sequence[int]) -> Predictor:
        """The same predictor with only these members (by index), their mean as the map:
        each study scored by the networks that held it out (`model/held_out.py`)."""
        keys = [self._keys[k] for k in members] if self._keys is not None else None
        return Predictor(
            [self.networks[k] for k in members],
            self.inference,
            self.rule,
            self.version,
            self.trained,
            keys,
            self._cache_dir,
        )

    @property
    def device(self) -> torch.device:
        return self.inference.device

    @property
    def n_members(self) -> int:
        """Member networks this predictor runs (1 for a single network, or `fast`)."""
        return len(self.networks)

    def plan(self, images: Sequence[np.ndarray]) -> tuple[list[tuple[int, int]], list[Batch]]:
        """Each image's size at the network's scale, and the batches they run in."""
        for img in images:
            if img.ndim != 2:
                raise ValueError(f"expected (H, W) images, got shape {img.shape}")
        shapes = [scaled_size(img.shape, self.inference.input_scale) for img in images]
        return shapes, make_batches(shapes, self.inference.batch_size, self.inference.multiple)

    def _maps(
        self, images: Sequence[np.ndarray], skip: Callable[[int], bool] | None = None
    ) -> Iterator[tuple[Batch, list[torch.Tensor]]]:
        shapes, batches = self.plan(images)
        for b in batches:
            if skip is not None:
                b = replace(b, indices=tuple(i for i in b.indices if not skip(i)))
                if not b.indices:
                    continue
            yield b, probability_maps(self.members, self.inference, images, b, shapes)

    def probabilities(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """float32 tumor probability maps in [0, 1], one per image, each its size."""
        out: dict[int, np.ndarray] = {}
        for b, maps in self._maps(images):
            flat = torch.cat([m.reshape(-1) for m in maps]).clamp_(0.0, 1.0)
            out.update(zip(b.indices, host_arrays(flat, maps), strict=True))
        return [out[i] for i in range(len(images))]

    def iter_batches(
        self, images: Sequence[np.ndarray], skip: Callable[[int], bool] | None = None
    ) -> Iterator[list[Prediction]]:
        """The predictions of each batch as it finishes, so that callers store the first
        while the next runs.

        Args:
            images: float32 (H, W) arrays from `model.preprocessing.decode_image`.
            skip: Asked for each image before its batch runs; True leaves it out (a
                study cancelled meanwhile).
        """
        for b, maps in self._maps(images, skip):
            levels, quantized = device_levels(maps, self.rule), _quantized(maps)
            yield [Prediction(*p) for p in zip(b.indices, levels, quantized, strict=True)]

    def masks(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """bool tumor masks after the rule, one per image, each its size."""
        out = {
            p.index: components(p.levels, self.rule).mask()
            for batch in self.iter_batches(images)
            for p in batch
        }
        return [out[i] for i in range(len(images))]
