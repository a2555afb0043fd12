"""Grouping images of different sizes into batches with little padding.

Whole-body MIPs are 400 px wide but 300 to 991 px high. Padding a 300-px study to 991 px
would triple its cost, so batches are formed from images of similar padded shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def padded(size: int, multiple: int) -> int:
    """Round `size` up to a multiple of `multiple`."""
    return -(-size // multiple) * multiple


@dataclass(frozen=True)
class Batch:
    """Indices of images that run together, and the (H, W) they are padded to."""

    indices: tuple[int, ...]
    height: int
    width: int


def make_batches(
    shapes: Sequence[tuple[int, int]],
    batch_size: int,
    multiple: int,
    max_height_spread: int = 64,
) -> list[Batch]:
    """Bucket images by padded shape.

    Images are sorted by padded (width, height). A batch holds at most `batch_size`
    images of one padded width whose padded heights lie within `max_height_spread` px of
    the batch's smallest, so no image is padded by more than that beyond its own size
    rounded to the stride.

    Args:
        shapes: (H, W) of each image.
        batch_size: Largest batch.
        multiple: The network's total stride.
        max_height_spread: Largest extra height padding inside a batch.

    Returns:
        Batches covering every index exactly once.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    order = sorted(
        range(len(shapes)),
        key=lambda i: (padded(shapes[i][1], multiple), padded(shapes[i][0], multiple), i),
    )
    batches: list[Batch] = []
    current: list[int] = []
    for i in order:
        h, w = padded(shapes[i][0], multiple), padded(shapes[i][1], multiple)
        if current:
            h0, w0 = (
                padded(shapes[current[0]][0], multiple),
                padded(shapes[current[0]][1], multiple),
            )
            if len(current) == batch_size or w != w0 or h - h0 > max_height_spread:
                batches.append(_close(current, shapes, multiple))
                current = []
        current.append(i)
    if current:
        batches.append(_close(current, shapes, multiple))
    return batches


def _close(indices: list[int], shapes: Sequence[tuple[int, int]], multiple: int) -> Batch:
    height = max(padded(shapes[i][0], multiple) for i in indices)
    width = max(padded(shapes[i][1], multiple) for i in indices)
    return Batch(tuple(indices), height, width)


def padding_waste(batches: Sequence[Batch], shapes: Sequence[tuple[int, int]]) -> float:
    """Share of computed pixels that are padding, over all batches (0 = none)."""
    computed = sum(len(b.indices) * b.height * b.width for b in batches)
    real = sum(shapes[i][0] * shapes[i][1] for b in batches for i in b.indices)
    return 1.0 - real / computed if computed else 0.0
