"""The manifest of a model artifact, without torch: read, validated, and the released one.

An artifact is a directory with `manifest.json` and its weights: `model.safetensors`, or
for an ensemble one `member-K.safetensors` per network, listed with their hashes in the
manifest's `members`. The manifest is enough to rebuild the network and reproduce its
masks: architecture arguments, preprocessing, threshold and post-processing, training
provenance and metrics. `model/artifact.py` writes and loads the weights (torch); the API
and the archive read manifests through this module only, so they never import torch.

`model/artifacts/RELEASED` names the released artifact bundled with the package, the one
a service uses when no version is promoted or configured.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
ARTIFACTS_DIR = Path(__file__).parent / "artifacts"
RELEASED_FILE = ARTIFACTS_DIR / "RELEASED"

_SHA256 = re.compile(r"[0-9a-f]{64}")


class ArtifactError(RuntimeError):
    """An artifact is missing, corrupt, or does not match its manifest."""


def _default_preprocessing() -> dict[str, Any]:
    return {
        "input": "grayscale PNG (L/LA/RGB/RGBA/P, 8 or 16 bit)",
        "invert": True,
        "scale": [0.0, 1.0],
        "input_scale": 1.0,
        "pad": "zero, bottom/right, to a multiple of the total stride",
    }


@dataclass
class Manifest:
    """What an artifact says about itself.

    Attributes:
        version: Unique name, `attention-unet-YYYYMMDD-<hash of weights>`, for an
            ensemble `attention-unet-ens-YYYYMMDD-<hash over the members' hashes>`.
        trained: False for a placeholder with random weights.
        architecture: Arguments of `model.network.build_network`.
        preprocessing: How pixels become the network input (documentation and checks).
        threshold: Probability above which a pixel is tumor.
        postprocessing: `min_component_px`, `min_peak` and `flip_tta`.
        training: Provenance: data fingerprint, seed, epochs, steps, seconds, device.
        metrics: Validation metrics.
        weights_sha256: Hash of the weights file, checked on load; for an ensemble the
            hash over its members' hashes (`members_sha256`).
        members: Ensemble members, each `{"weights": file name, "sha256": hash of that
            file, "fold": held-out fold or None}`; empty for a single network in
            `model.safetensors`. All members share `architecture` and the post-processing.
    """

    version: str
    trained: bool
    architecture: dict[str, Any]
    preprocessing: dict[str, Any] = field(default_factory=_default_preprocessing)
    threshold: float = 0.5
    postprocessing: dict[str, Any] = field(
        default_factory=lambda: {"min_component_px": 0, "flip_tta": False}
    )
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    weights_sha256: str = ""
    created_at: str = ""
    format_version: int = FORMAT_VERSION
    members: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n_members(self) -> int:
        """Networks in the artifact: 1 for a single network."""
        return len(self.members) or 1

    def to_json(self) -> str:
        """The manifest as indented JSON, as `manifest.json` holds it."""
        raw = asdict(self)
        if not raw["members"]:
            del raw["members"]  # a single network's manifest reads as it did before ensembles
        return json.dumps(raw, indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Manifest:
        """Validate a parsed manifest; unknown keys are ignored.

        Raises:
            ArtifactError: Missing keys, another format version, or bad `members`.
        """
        required = {"version", "trained", "architecture", "threshold", "weights_sha256"}
        missing = sorted(required - raw.keys())
        if missing:
            raise ArtifactError(f"manifest is missing keys: {', '.join(missing)}")
        if raw.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
            raise ArtifactError(
                f"manifest format {raw.get('format_version')} is not {FORMAT_VERSION}"
            )
        if "members" in raw:
            _check_members(raw["members"])
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in raw.items() if k in known})


def _check_members(members: Any) -> None:
    """Refuse a `members` list that does not name distinct plain files with hashes."""
    if not isinstance(members, list) or not members:
        raise ArtifactError("manifest members must be a non-empty list")
    seen: set[str] = set()
    for k, m in enumerate(members, 1):
        if not isinstance(m, dict):
            raise ArtifactError(f"manifest member {k} is not an object")
        name, sha, fold = m.get("weights"), m.get("sha256"), m.get("fold")
        if (
            not isinstance(name, str)
            or Path(name).name != name
            or not name.endswith(".safetensors")
        ):
            raise ArtifactError(f"manifest member {k} names no .safetensors file: {name!r}")
        if name in seen:
            raise ArtifactError(f"manifest lists {name} twice")
        seen.add(name)
        if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
            raise ArtifactError(f"manifest member {name} has no sha256")
        if fold is not None and (not isinstance(fold, int) or isinstance(fold, bool)):
            raise ArtifactError(f"manifest member {name} has a fold that is not an integer")


def members_sha256(hashes: Sequence[str]) -> str:
    """An ensemble's `weights_sha256`: the hash over its members' hashes, in order."""
    return hashlib.sha256("\n".join(hashes).encode()).hexdigest()


def read_manifest(directory: Path) -> Manifest:
    """Read and validate an artifact's manifest without loading weights.

    Raises:
        ArtifactError: Missing, unreadable or invalid manifest.
    """
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(f"no {MANIFEST_NAME} in {directory}")
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"unreadable manifest {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ArtifactError(f"manifest {path} is not a JSON object")
    return Manifest.from_dict(raw)


def released_artifact_dir() -> Path:
    """The released artifact bundled with the package (`model/artifacts/RELEASED` names it).

    Raises:
        ArtifactError: No artifact is released.
    """
    if not RELEASED_FILE.is_file():
        raise ArtifactError(f"no released artifact: {RELEASED_FILE} is missing")
    return ARTIFACTS_DIR / RELEASED_FILE.read_text().strip()


def artifact_dir(directory: Path | None) -> Path:
    """`directory`, or the released artifact's when None."""
    return Path(directory) if directory is not None else released_artifact_dir()
