"""The DM i AI 2023 folder layout: patients with labels, controls without.

```
DIR/patients/imgs/patient_NNN.png   DIR/patients/labels/segmentation_NNN.png
DIR/controls/imgs/control_NNN.png
```
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.preprocessing import decode_image, decode_mask


@dataclass(frozen=True)
class StudyFile:
    """One study on disk; `label` is None for controls."""

    name: str
    image: Path
    label: Path | None

    @property
    def is_patient(self) -> bool:
        return self.label is not None


@dataclass
class Study:
    """A decoded study: network input and bool label (all False for controls)."""

    name: str
    image: np.ndarray
    label: np.ndarray
    is_patient: bool


def find_studies(data_dir: Path) -> list[StudyFile]:
    """List patients (with their labels) and controls in the DM i AI layout.

    Raises:
        FileNotFoundError: The folder has neither patients nor controls, or a patient has
            no label.
    """
    data_dir = Path(data_dir)
    studies: list[StudyFile] = []
    for img in sorted((data_dir / "patients" / "imgs").glob("*.png")):
        number = img.stem.rsplit("_", 1)[-1]
        label = data_dir / "patients" / "labels" / f"segmentation_{number}.png"
        if not label.is_file():
            raise FileNotFoundError(f"patient {img.name} has no label {label}")
        studies.append(StudyFile(img.stem, img, label))
    for img in sorted((data_dir / "controls" / "imgs").glob("*.png")):
        studies.append(StudyFile(img.stem, img, None))
    if not studies:
        raise FileNotFoundError(
            f"{data_dir} holds no studies (expected patients/imgs and controls/imgs)"
        )
    return studies


def load_study(f: StudyFile) -> Study:
    """Decode one study's image and label through the shared preprocessing."""
    image = decode_image(f.image.read_bytes())
    label = (
        decode_mask(f.label.read_bytes(), image.shape)
        if f.label is not None
        else np.zeros(image.shape, dtype=bool)
    )
    return Study(f.name, image, label, f.is_patient)


def fingerprint(files: list[StudyFile]) -> str:
    """A sha256 over the names and bytes of every file: which data made an artifact."""
    digest = hashlib.sha256()
    for f in files:
        for p in (f.image, f.label):
            if p is not None:
                digest.update(p.name.encode())
                digest.update(hashlib.sha256(p.read_bytes()).digest())
    return digest.hexdigest()


def split(
    files: list[StudyFile], seed: int, folds: int = 5, fold: int = 0
) -> tuple[list[StudyFile], list[StudyFile]]:
    """Patient-level k-fold split, fixed by the seed; controls are split the same way.

    Each study is one patient, so splitting studies is splitting patients.

    Returns:
        (train, validation) for the given fold.
    """
    if not 0 <= fold < folds:
        raise ValueError(f"fold {fold} is outside 0..{folds - 1}")
    rng = np.random.default_rng(seed)
    train: list[StudyFile] = []
    val: list[StudyFile] = []
    for group in ([f for f in files if f.is_patient], [f for f in files if not f.is_patient]):
        order = rng.permutation(len(group))
        for rank, idx in enumerate(order):
            (val if rank % folds == fold else train).append(group[idx])
    return train, val


def held_out_by(training: Mapping[str, Any]) -> tuple[int, int, int]:
    """(split seed, folds, fold) of a training run's manifest ``training`` block: what
    `split` needs to find the studies that run held out. Runs that predate ``split_seed``
    split by their ``seed``."""
    seed = training["split_seed"] if "split_seed" in training else training["seed"]
    return int(seed), int(training["folds"]), int(training["fold"])
