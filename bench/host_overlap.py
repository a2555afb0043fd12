"""Host work beside the network: the worker's compute step (decode the PNGs, predict in
batches, measure: metrics and the mask PNG) three ways, in one run on the same studies.

- *service*: `SegmentationService._compute` as it runs on this device (on a CPU: decode
  all, then the network, then measure all, each host step in the PNG thread pool);
- *measure beside*: each batch's studies measured in the pool while the next batch runs
  (the service's GPU path, and its CPU path before this benchmark);
- *decode beside*: PNG sizes read from the headers, batches planned from them, and the
  decoding streamed in batch order while earlier batches run; measured beside too.

The settings are alternated pass by pass and the median pass counts; each variant's
masks must equal the service's.

Usage: .venv/bin/python -m bench.host_overlap [--n 96] [--chunk-size 32] [--repeat 7] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from PIL import Image

from bench.inference import DATA, machine, pick
from config.settings import get_settings
from core.current_model import CurrentModel
from model.bucketing import make_batches
from model.manifest import artifact_dir, read_manifest
from model.postprocessing import to_mask
from model.predictor import Predictor
from model.preprocessing import decode_image, scaled_size
from worker.predictor_cache import PredictorCache
from worker.segmentation import ClaimedStudy, Outcome, SegmentationService

Variant = Callable[[Sequence[ClaimedStudy]], list[Outcome]]


def released_predictor(service: SegmentationService) -> Predictor:
    """The service's predictor of the configured (or released) artifact."""
    path = artifact_dir(service.settings.artifact_dir)
    return service.cache.get(CurrentModel(path, read_manifest(path).version, promoted=False))


def variants(service: SegmentationService, threads: int) -> dict[str, Variant]:
    """The three ways, on the service's predictor and a pool of `threads`."""
    predictor = released_predictor(service)

    def measure_beside(chunk: Sequence[ClaimedStudy]) -> list[Outcome]:
        with ThreadPoolExecutor(threads) as pool:
            images = [d[0] for d in pool.map(service._decode, chunk) if not isinstance(d, str)]
            pending = {
                i: pool.submit(service._measure, chunk[i], images[i], None, (mask, q), predictor)
                for i, mask, q in predictor.iter_predict_with_probabilities(images)
            }
            return [pending[i].result() for i in range(len(chunk))]

    def decode_beside(chunk: Sequence[ClaimedStudy]) -> list[Outcome]:
        sizes = [Image.open(io.BytesIO(c.input_png)).size[::-1] for c in chunk]
        shapes = [scaled_size(s, predictor.input_scale) for s in sizes]
        batches = make_batches(shapes, predictor.batch_size, predictor.multiple)
        with ThreadPoolExecutor(threads) as pool:
            futures = {
                i: pool.submit(decode_image, chunk[i].input_png) for b in batches for i in b.indices
            }

            class Streamed:  # images[i] waits for its decoding
                def __getitem__(self, i: int) -> np.ndarray:
                    return futures[i].result()

            pending: list[Future[Outcome]] = []
            for b in batches:
                for i, prob in predictor._run_batch(Streamed(), shapes, b):  # type: ignore[arg-type]
                    mask = to_mask(
                        prob,
                        predictor.threshold,
                        predictor.min_component_px,
                        predictor.min_peak or 0.0,
                    )
                    image = futures[i].result()
                    quantized = np.round(prob * 255.0).astype(np.uint8)
                    pending.append(
                        pool.submit(
                            service._measure, chunk[i], image, None, (mask, quantized), predictor
                        )
                    )
            order = [i for b in batches for i in b.indices]
            by_index = dict(zip(order, [f.result() for f in pending], strict=True))
            return [by_index[i] for i in range(len(chunk))]

    return {
        "service": lambda chunk: service._compute(predictor, chunk, {}),
        "measure beside": measure_beside,
        "decode beside": decode_beside,
    }


def run(n: int, chunk_size: int, repeat: int) -> dict:
    settings = get_settings()
    service = SegmentationService(settings, PredictorCache(settings.device, settings.batch_size))
    files = pick(n, DATA)
    studies = [ClaimedStudy(i, 0, f.name, f.image.read_bytes(), None) for i, f in enumerate(files)]
    chunks = [studies[i : i + chunk_size] for i in range(0, len(studies), chunk_size)]
    ways = variants(service, settings.io_threads_per_process)
    masks = {}
    for name, way in ways.items():  # warm-up, and the masks to compare
        masks[name] = [o.values["mask_png"] for chunk in chunks for o in way(chunk)]
        if masks[name] != masks["service"]:
            raise RuntimeError(f"{name}: masks differ from the service's")
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for r in range(repeat):
        for name in list(ways) if r % 2 == 0 else list(ways)[::-1]:
            start = time.perf_counter()
            for chunk in chunks:
                ways[name](chunk)
            seconds[name].append(time.perf_counter() - start)
    service_s = statistics.median(seconds["service"])
    predictor = released_predictor(service)
    return {
        "machine": machine(predictor.device),
        "model_version": predictor.version,
        "n_studies": len(studies),
        "chunk_size": chunk_size,
        "batch_size": predictor.batch_size,
        "pool_threads": settings.io_threads_per_process,
        "repeat": repeat,
        "ms_per_study": {k: statistics.median(v) / len(studies) * 1000 for k, v in seconds.items()},
        "ratio_to_service": {k: statistics.median(v) / service_s for k, v in seconds.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=96, help="development studies (half patients)")
    parser.add_argument("--chunk-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.n, args.chunk_size, args.repeat)
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"machine: {result['machine']}\nmodel: {result['model_version']}, "
        f"{result['n_studies']} studies in chunks of {result['chunk_size']}, batch "
        f"{result['batch_size']}, {result['pool_threads']} pool threads, median of "
        f"{result['repeat']} passes\n"
    )
    print("| host work | ms per study | time against the service's |")
    print("|---|---|---|")
    for name, ms in result["ms_per_study"].items():
        print(f"| {name} | {ms:.2f} | {result['ratio_to_service'][name]:.3f} |")


if __name__ == "__main__":
    main()
