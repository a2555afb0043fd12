"""Matching label masks to studies: same name, same patient number, or the same order.

Pure functions on file names, shared by the API and the ``tumorseg submit`` client.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import PurePath

_NUMBER = re.compile(r"(\d+)")
#: Label name prefix -> study name prefix of a known naming convention (DM i AI 2023:
#: segmentation_001.png is the label of patient_001.png, not of control_001.png).
KNOWN_PREFIXES = {"segmentation": "patient", "seg": "patient", "mask": "patient"}


class LabelMatchError(ValueError):
    """Labels that cannot be matched to studies unambiguously."""


def _stem(name: str) -> str:
    return PurePath(name).stem.lower()


def _prefix(name: str) -> str:
    return _NUMBER.split(_stem(name))[0].strip("_- .")


def _number(name: str) -> str | None:
    found = _NUMBER.findall(_stem(name))
    return (found[-1].lstrip("0") or "0") if found else None


def _by_number(images: Sequence[str], candidates: list[int], label: str) -> int | None:
    if len(candidates) > 1:  # e.g. patient_001 and control_001: use the naming convention
        wanted = KNOWN_PREFIXES.get(_prefix(label))
        candidates = [i for i in candidates if _prefix(images[i]) == wanted]
    return candidates[0] if len(candidates) == 1 else None


def match_labels(
    images: Sequence[str], labels: Sequence[str], allow_order: bool = True
) -> dict[int, int]:
    """Pair labels with images.

    A label goes to the image with the same file stem, else to the only image carrying
    the same (last) number in its name, e.g. ``segmentation_001.png`` to
    ``patient_001.png`` (when several carry it, the one that follows the DM i AI naming
    convention in :data:`KNOWN_PREFIXES`). When no label matches by name or number and
    there are as many labels as images, they are paired by order.

    Args:
        images: Study file names, in submission order.
        labels: Label file names.
        allow_order: Fall back to pairing by order.

    Returns:
        Image index -> label index.

    Raises:
        LabelMatchError: A label matches no image, or two labels match one image.
    """
    if not labels:
        return {}
    stems = {_stem(n): i for i, n in enumerate(images)}
    by_number: dict[str | None, list[int]] = defaultdict(list)
    for index, n in enumerate(images):
        by_number[_number(n)].append(index)
    pairs: dict[int, int] = {}
    unmatched: list[str] = []
    for j, name in enumerate(labels):
        i = stems.get(_stem(name))
        if i is None and _number(name) is not None:
            i = _by_number(images, by_number.get(_number(name), []), name)
        if i is None:
            unmatched.append(name)
            continue
        if i in pairs:
            raise LabelMatchError(
                f"labels {labels[pairs[i]]!r} and {name!r} both match study {images[i]!r}"
            )
        pairs[i] = j
    if not pairs and allow_order and len(labels) == len(images):
        return {i: i for i in range(len(images))}
    if unmatched:
        raise LabelMatchError(
            "labels that match no study by name or number: " + ", ".join(unmatched[:10])
        )
    return pairs
