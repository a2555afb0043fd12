"""Inference throughput: the seed's path against our batched predictor, in one run.

The seed's path (re-implemented from its description): the PNG's 4 RGBA channels as
input, an Attention U-Net with 4 input channels, MONAI sliding-window inference over
96x96 windows (sw_batch 4), one study at a time, fp32. Ours: one channel, whole image at
the artifact's input scale, bucketed batches, channels_last, bf16 autocast where the
hardware has it natively.

Both are timed from PNG bytes to a bool mask, on the same development studies, in the
same process; "model only" times ours again on already decoded images (resampling,
network, post-processing), and "network only" times the forward passes alone on a
batch already on the device, of the most common padded shape (the figure to hold against
a model-throughput target; on CUDA also in channels_last). The
agreement column checks that speed was not bought with quality: our
masks against the fp32, one-study-at-a-time whole-image masks of the same weights (torch).

With `--runtimes torch openvino` each setting runs in both runtimes (`model/runtime.py`):
torch and OpenVINO's CPU plugin, fp32 and bf16, the same artifact, every member.

Usage: .venv/bin/python -m bench.inference [--n 64] [--batch-sizes 1 4 8 16] [--repeat 3]
       [--runtimes torch openvino] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from PIL import Image

from bench.memory import PeakRSS
from model.bucketing import padded, padding_waste
from model.dataset import find_studies
from model.metrics import dice
from model.network import DEFAULT_ARCHITECTURE, build_network
from model.predictor import Predictor, bf16_supported
from model.preprocessing import decode_image, decode_mask, scaled_size

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dmiai2023"


def seed_path(net: torch.nn.Module, png: bytes, device: torch.device) -> np.ndarray:
    """One study through the seed's pipeline: RGBA/255 in, sliding window, threshold 0.5."""
    rgba = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"), dtype=np.float32) / 255.0
    x = torch.from_numpy(rgba).permute(2, 0, 1)[None].to(device)
    with torch.inference_mode():
        logits = sliding_window_inference(x, (96, 96), sw_batch_size=4, predictor=net)
    assert isinstance(logits, torch.Tensor)
    return (torch.sigmoid(logits)[0, 0] > 0.5).cpu().numpy()


def pick(n: int, data: Path = DATA) -> list:
    """The first n/2 patients and n/2 controls, sorted by name: fixed across runs. Where
    there are fewer than n/2 patients, controls make up the rest."""
    files = find_studies(data)
    pats = [f for f in files if f.is_patient][: n - n // 2]
    ctrls = [f for f in files if not f.is_patient][: n - len(pats)]
    if len(pats) + len(ctrls) < n:
        raise ValueError(f"{data} holds {len(files)} studies, fewer than the {n} asked for")
    return pats + ctrls


def machine(device: torch.device | None = None) -> str:
    """CPU model, threads, torch version and whether bf16 is native here."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if "model name" in line)
    except (OSError, StopIteration):
        pass
    device = device or torch.device("cpu")
    bf16 = bf16_supported(device)
    gpu = f"{torch.cuda.get_device_name(device)}, " if device.type == "cuda" else ""
    return (
        f"{gpu}{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"bf16 native: {bf16}"
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def network_rate(
    pred: Predictor, shape: tuple[int, int], seconds: float = 2.0, channels_last: bool = False
) -> float:
    """Studies/s of one member network alone, in the predictor's runtime: repeated forward
    passes on one device-resident batch of the predictor's batch size of images of
    `shape`, synchronised; no decode, resampling, copies or post-processing.
    `channels_last` converts a (CUDA) network for the measurement and back."""
    batch_size = pred.inference.batch_size
    network, member = pred.networks[0], pred.members[0]
    x = torch.rand((batch_size, 1, *shape), device=pred.device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    try:
        with torch.inference_mode():
            member(x)  # warm-up (cuDNN picks its algorithms here)
            _sync(pred.device)
            done, start = 0, time.perf_counter()
            while done < 3 or time.perf_counter() - start < seconds:
                member(x)
                done += 1
            _sync(pred.device)
            return done * batch_size / (time.perf_counter() - start)
    finally:
        if channels_last:
            network.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]


def common_shape(images: list[np.ndarray], scale: float, multiple: int) -> tuple[int, int]:
    """The most common padded network input shape of these images."""
    shapes = [tuple(padded(d, multiple) for d in scaled_size(img.shape, scale)) for img in images]
    return max(set(shapes), key=shapes.count)  # type: ignore[return-value]


def run(
    n: int,
    batch_sizes: list[int],
    seed_n: int,
    device_name: str = "cpu",
    data: Path = DATA,
    artifact: Path | None = None,
    repeat: int = 1,
    runtimes: tuple[str, ...] = ("torch",),
    members: int = 0,
) -> dict:
    device = torch.device(device_name)
    files = pick(n, data)
    pngs = [f.image.read_bytes() for f in files]
    decoded = [decode_image(p) for p in pngs]
    rows: list[dict] = []

    seed_net = build_network({**DEFAULT_ARCHITECTURE, "in_channels": 4}).eval().to(device)
    seed_pngs = pngs[:seed_n]
    seed_path(seed_net, seed_pngs[0], device)  # warm-up
    seed_runs = []
    with PeakRSS() as mem:
        for _ in range(repeat):
            t0 = time.perf_counter()
            for p in seed_pngs:
                seed_path(seed_net, p, device)
            seed_runs.append(time.perf_counter() - t0)
    seed_s = float(np.median(seed_runs))
    baseline = len(seed_pngs) / seed_s
    rows.append(
        {
            "path": "seed: 4ch, sliding window 96x96, sw_batch 4, 1 study",
            "batch": 1,
            "precision": "fp32",
            "studies_per_s": baseline,
            "model_studies_per_s": None,
            "network_studies_per_s": None,
            "peak_rss_mb": mem.peak / 2**20,
            "peak_gpu_mb": None,
            "agreement_dice": None,
            "padding_waste": None,
        }
    )

    reference = Predictor.from_artifact(
        artifact, device=device_name, batch_size=1, precision="fp32"
    )
    ref_masks = [reference.masks([d])[0] for d in decoded]
    labels = [
        decode_mask(f.label.read_bytes(), d.shape) if f.label else None
        for f, d in zip(files, decoded, strict=True)
    ]
    precisions = ["fp32"] + (["bf16"] if bf16_supported(device) else [])
    shape = common_shape(decoded, reference.inference.input_scale, reference.inference.multiple)
    best = 0.0
    cache = Path(__file__).resolve().parents[1] / "var" / "bench-openvino"
    settings = [(r, p, bs) for r in runtimes for p in precisions for bs in batch_sizes]
    for runtime, precision, bs in settings:
        pred = Predictor.from_artifact(
            artifact,
            device=device_name,
            batch_size=bs,
            precision=precision,
            runtime=runtime,
            cache_dir=cache,
            members=members,
        )
        pred.masks(decoded[: 2 * bs])  # warm-up (kernels are made per shape)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        png_s, model_s = [], []
        with PeakRSS() as mem:
            for _ in range(repeat):  # PNG bytes to masks, then the model alone, in turns
                t0 = time.perf_counter()
                masks = pred.masks([decode_image(p) for p in pngs])
                png_s.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                pred.masks(decoded)  # resampling, network, post-processing
                model_s.append(time.perf_counter() - t0)
        secs = float(np.median(png_s))
        model_rate = len(pngs) / float(np.median(model_s))
        agree = [
            dice(m, r)
            for m, r, lab in zip(masks, ref_masks, labels, strict=True)
            if lab is not None
        ]
        gpu_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        network = network_rate(pred, shape)
        network_cl = (
            network_rate(pred, shape, channels_last=True) if device.type == "cuda" else None
        )
        rate = len(pngs) / secs
        best = max(best, rate)
        rows.append(
            {
                "path": f"ours: 1ch, whole image, bucketed, {runtime}",
                "runtime": runtime,
                "members": pred.n_members,
                "batch": bs,
                "precision": precision,
                "studies_per_s": rate,
                "model_studies_per_s": model_rate,
                "network_studies_per_s": network,
                "network_channels_last_studies_per_s": network_cl,
                "peak_rss_mb": mem.peak / 2**20,
                "peak_gpu_mb": gpu_mb,
                "agreement_dice": float(np.mean(agree)) if agree else None,
                "padding_waste": padding_waste(*reversed(pred.plan(decoded))),
            }
        )
    return {
        "machine": machine(device),
        "model_version": reference.version,
        "n_studies": len(pngs),
        "repeat": repeat,
        "network_input_shape": list(shape),
        "n_seed_studies": len(seed_pngs),
        "baseline_studies_per_s": baseline,
        "ours_studies_per_s": best,
        "ratio": best / baseline,
        "ours_model_studies_per_s": max(
            r["model_studies_per_s"] for r in rows if r["model_studies_per_s"] is not None
        ),
        "ours_network_studies_per_s": max(
            max(
                r["network_studies_per_s"] or 0.0,
                r.get("network_channels_last_studies_per_s") or 0.0,
            )
            for r in rows
        ),
        "min_agreement_dice": min(
            r["agreement_dice"] for r in rows if r["agreement_dice"] is not None
        ),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=64, help="development studies (half patients)")
    parser.add_argument("--seed-n", type=int, default=16, help="studies for the slow seed path")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="timed passes per setting; the median counts (this machine's timings are noisy)",
    )
    parser.add_argument("--device", default="cpu", help="cpu | cuda (both paths run there)")
    parser.add_argument("--data", type=Path, default=DATA, help="folder in the DM i AI layout")
    parser.add_argument("--artifact", type=Path, default=None, help="default: the released one")
    parser.add_argument(
        "--runtimes",
        nargs="+",
        default=["torch"],
        choices=["torch", "openvino"],
        help="where our networks run (model/runtime.py); each setting in each runtime",
    )
    parser.add_argument(
        "--members", type=int, default=0, help="an ensemble's members to run (0: all; 1: fast)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(
        args.n,
        args.batch_sizes,
        args.seed_n,
        args.device,
        args.data,
        args.artifact,
        args.repeat,
        tuple(args.runtimes),
        args.members,
    )
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"machine: {result['machine']}\nmodel: {result['model_version']}, "
        f"{result['n_studies']} studies ({result['n_seed_studies']} for the seed path), "
        f"median of {result['repeat']} passes; "
        f"network-only input {result['network_input_shape']}\n"
    )
    print(
        "| path | batch | precision | studies/s | model only studies/s | network only "
        "studies/s | peak RSS MB | peak GPU MB | padding waste | mask Dice vs fp32 single |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        waste = "" if r["padding_waste"] is None else f"{r['padding_waste']:.1%}"
        agree = "" if r["agreement_dice"] is None else f"{r['agreement_dice']:.4f}"
        model = "" if r["model_studies_per_s"] is None else f"{r['model_studies_per_s']:.2f}"
        network = "" if r["network_studies_per_s"] is None else f"{r['network_studies_per_s']:.1f}"
        if r.get("network_channels_last_studies_per_s"):
            network += f" ({r['network_channels_last_studies_per_s']:.1f} channels_last)"
        gpu = "" if r["peak_gpu_mb"] is None else f"{r['peak_gpu_mb']:.0f}"
        print(
            f"| {r['path']} | {r['batch']} | {r['precision']} | "
            f"{r['studies_per_s']:.2f} | "
            f"{model} | {network} | {r['peak_rss_mb']:.0f} | {gpu} | {waste} | {agree} |"
        )
    print(f"\nratio (best ours / seed): {result['ratio']:.1f}x")


if __name__ == "__main__":
    main()
