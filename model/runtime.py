"""Where the member networks run: torch, or OpenVINO's CPU plugin.

On a CPU, OpenVINO runs these networks several times as fast as torch at the same
precision (docs/BENCHMARKS.md, "Runtimes"), so `auto` picks it there whenever it is
installed (`pip install 'tumorseg[openvino]'`); torch stays the runtime for CUDA and the
fallback without OpenVINO. A member is converted from its torch network once, through
OpenVINO's PyTorch frontend, and the converted model is kept in a cache folder under the
member's weights hash, so a worker converts nothing twice. OpenVINO's telemetry is turned
off (its documented opt-out) before OpenVINO is imported.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "openvino")
#: The runtime `auto` picks per device type: the faster one `bench.inference` measured
#: (docs/BENCHMARKS.md); OpenVINO only where it is installed.
BEST_RUNTIME = {"cpu": "openvino", "cuda": "torch"}
#: Bumped when the conversion changes, so that cached conversions are made again.
CONVERSION = 1


def openvino_installed() -> bool:
    """Whether the OpenVINO runtime can be imported."""
    return importlib.util.find_spec("openvino") is not None


def resolve_runtime(runtime: str, device: torch.device) -> str:
    """'torch' or 'openvino' for 'auto' | 'torch' | 'openvino' on `device`.

    Raises:
        ValueError: An unknown runtime, or OpenVINO asked for where it cannot run.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}: one of {', '.join(RUNTIMES)}")
    if runtime == "auto":
        best = BEST_RUNTIME.get(device.type, "torch")
        return best if best != "openvino" or openvino_installed() else "torch"
    if runtime == "openvino":
        if device.type != "cpu":
            raise ValueError(f"the openvino runtime runs on the CPU, not on {device}")
        if not openvino_installed():
            raise ValueError(
                "the openvino runtime needs OpenVINO: pip install 'tumorseg[openvino]'"
            )
    return runtime


def _telemetry_off() -> None:
    """OpenVINO's documented opt-out (`opt_in_out --opt_out`: a consent file saying no),
    written before OpenVINO is imported; where no consent file can be written, this
    process counts as a CI run, which its telemetry leaves alone too."""
    try:
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker

        checker = OptInChecker()
        if checker.check(enable_opt_in_dialog=False) != ConsentCheckResult.DECLINED:
            checker.update_result(ConsentCheckResult.DECLINED)
        if checker.check(enable_opt_in_dialog=False) == ConsentCheckResult.DECLINED:
            return
    except Exception as exc:  # a package layout of another version
        log.debug("openvino telemetry consent file not written: %s", exc)
    os.environ["CI"] = "true"


def _openvino() -> Any:
    _telemetry_off()
    import openvino

    return openvino


class OpenVinoMember:
    """One member network compiled for OpenVINO's CPU plugin: logits of a (B, 1, H, W)
    float32 batch, as float32 (the predictor's `LogitsFn`). Not thread-safe: one infer
    request, used by one predictor."""

    def __init__(self, compiled: Any) -> None:
        self.request = compiled.create_infer_request()

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        out = self.request.infer({0: x})[0]
        return torch.from_numpy(np.array(out, dtype=np.float32, copy=True))


def _convert(network: torch.nn.Module) -> Any:
    """The network as an OpenVINO model with a dynamic batch, height and width."""
    ov = _openvino()
    from openvino.frontend import FrontEndManager
    from openvino.frontend.pytorch.ts_decoder import TorchScriptPythonDecoder

    network = network.eval()
    # tracing warns of every shape check it freezes; the converted model is checked
    # against torch's maps instead (tests/model/test_runtime.py, test_golden.py)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit._trace.TracerWarning)
        decoder = TorchScriptPythonDecoder(network, example_input=(torch.zeros(1, 1, 64, 64),))
    frontend = FrontEndManager().load_by_framework("pytorch")
    model = frontend.convert(frontend.load(decoder))
    model.reshape({model.inputs[0]: ov.PartialShape([-1, 1, -1, -1])})
    return model


def _cached(network: torch.nn.Module, key: str | None, cache_dir: Path | None) -> Any:
    """The converted model from the cache, or converted now (and cached when it can be)."""
    ov = _openvino()
    core = ov.Core()
    if key is None or cache_dir is None:
        return _convert(network)
    path = Path(cache_dir) / f"{key[:32]}-c{CONVERSION}-ov{ov.__version__.split('-')[0]}.xml"
    if path.is_file():
        return core.read_model(str(path))
    model = _convert(network)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # written beside and renamed: two workers converting at once never read half a file
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            xml = Path(tmp) / path.name
            ov.save_model(model, str(xml), compress_to_fp16=False)
            os.replace(xml.with_suffix(".bin"), path.with_suffix(".bin"))
            os.replace(xml, path)
        log.info("converted a member for OpenVINO: %s", path)
    except OSError as exc:
        log.warning("converted member not cached at %s: %s", path, exc)
    return model


def openvino_members(
    networks: Sequence[torch.nn.Module],
    keys: Sequence[str | None],
    cache_dir: Path | None,
    bf16: bool,
    threads: int = 0,
) -> list[OpenVinoMember]:
    """The members compiled for the CPU.

    Args:
        networks: The members' torch networks.
        keys: Each member's weights hash, which names its converted model in the cache
            (None: not cached).
        cache_dir: The cache folder; None converts every time.
        bf16: Run in bf16 (where the CPU has it natively); else fp32.
        threads: CPU threads for inference (0: OpenVINO's default).
    """
    core = _openvino().Core()
    config: dict[str, Any] = {
        "INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32",
        "PERFORMANCE_HINT": "LATENCY",
    }
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return [
        OpenVinoMember(core.compile_model(_cached(net, key, cache_dir), "CPU", config))
        for net, key in zip(networks, keys, strict=True)
    ]
