"""Model artifacts: a directory with `model.safetensors` and a JSON `manifest.json`.

The manifest is enough to rebuild the network and reproduce its masks: architecture
arguments, preprocessing, threshold and post-processing, training provenance and metrics.
Training writes a new directory per version and never overwrites an old one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from model.network import DEFAULT_ARCHITECTURE, build_network

MANIFEST_NAME = "manifest.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1
ARTIFACTS_DIR = Path(__file__).parent / "artifacts"
RELEASED_FILE = ARTIFACTS_DIR / "RELEASED"


class ArtifactError(RuntimeError):
    """An artifact is missing, corrupt, or does not match its manifest."""


@dataclass
class Manifest:
    """What an artifact says about itself.

    Attributes:
        version: Unique name, `attention-unet-YYYYMMDD-<hash of weights>`.
        trained: False for a placeholder with random weights.
        architecture: Arguments of `model.network.build_network`.
        preprocessing: How pixels become the network input (documentation and checks).
        threshold: Probability above which a pixel is tumor.
        postprocessing: `min_component_px` and `flip_tta`.
        training: Provenance: data fingerprint, seed, epochs, steps, seconds, device.
        metrics: Validation metrics.
        weights_sha256: Hash of the weights file, checked on load.
    """

    version: str
    trained: bool
    architecture: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_ARCHITECTURE))
    preprocessing: dict[str, Any] = field(
        default_factory=lambda: {
            "input": "grayscale PNG (L/LA/RGB/RGBA/P, 8 or 16 bit)",
            "invert": True,
            "scale": [0.0, 1.0],
            "input_scale": 1.0,
            "pad": "zero, bottom/right, to a multiple of the total stride",
        }
    )
    threshold: float = 0.5
    postprocessing: dict[str, Any] = field(
        default_factory=lambda: {"min_component_px": 0, "flip_tta": False}
    )
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    weights_sha256: str = ""
    created_at: str = ""
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Manifest:
        required = {"version", "trained", "architecture", "threshold", "weights_sha256"}
        missing = sorted(required - raw.keys())
        if missing:
            raise ArtifactError(f"manifest is missing keys: {', '.join(missing)}")
        if raw.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
            raise ArtifactError(
                f"manifest format {raw.get('format_version')} is not {FORMAT_VERSION}"
            )
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in raw.items() if k in known})


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(directory: Path) -> Manifest:
    """Read and validate an artifact's manifest without loading weights.

    Raises:
        ArtifactError: Missing or unreadable manifest.
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


def save_artifact(
    network: torch.nn.Module, manifest: Manifest, parent: Path, name: str | None = None
) -> Path:
    """Write weights and manifest into a new directory under `parent`.

    The version is derived from the date and the weights' hash. An existing directory is
    never overwritten.

    Args:
        network: The trained network.
        manifest: Its manifest; `version`, `weights_sha256` and `created_at` are filled in.
        parent: Directory that receives the new artifact directory.
        name: Directory name; defaults to the version.

    Returns:
        The new artifact directory.

    Raises:
        ArtifactError: The target directory already exists.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    tmp = parent / f".tmp-{datetime.now(UTC).strftime('%Y%m%d%H%M%S%f')}"
    tmp.mkdir()
    save_file(state, str(tmp / WEIGHTS_NAME))
    sha = _sha256(tmp / WEIGHTS_NAME)
    now = datetime.now(UTC)
    manifest.weights_sha256 = sha
    manifest.created_at = now.isoformat(timespec="seconds")
    manifest.version = f"attention-unet-{now.strftime('%Y%m%d')}-{sha[:8]}"
    (tmp / MANIFEST_NAME).write_text(manifest.to_json())
    target = parent / (name or manifest.version)
    if target.exists():
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
        raise ArtifactError(f"refusing to overwrite existing artifact {target}")
    tmp.rename(target)
    return target


def default_artifact_dir() -> Path:
    """The released artifact bundled with the package (`model/artifacts/RELEASED` names it).

    Raises:
        ArtifactError: No artifact is released.
    """
    if not RELEASED_FILE.is_file():
        raise ArtifactError(f"no released artifact: {RELEASED_FILE} is missing")
    return ARTIFACTS_DIR / RELEASED_FILE.read_text().strip()


def load_artifact(directory: Path | None = None) -> tuple[Manifest, torch.nn.Module]:
    """Load an artifact: check the manifest and the weights, rebuild the network.

    Args:
        directory: Artifact directory; None means the bundled default.

    Returns:
        (manifest, network in eval mode on the CPU).

    Raises:
        ArtifactError: Missing files, a weights hash mismatch, or weights that do not fit
            the manifest's architecture.
    """
    directory = Path(directory) if directory is not None else default_artifact_dir()
    manifest = read_manifest(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise ArtifactError(f"no {WEIGHTS_NAME} in {directory}")
    if manifest.weights_sha256 and _sha256(weights) != manifest.weights_sha256:
        raise ArtifactError(f"{weights} does not match the manifest's sha256 (corrupt?)")
    try:
        network = build_network(manifest.architecture)
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"manifest architecture is invalid: {exc}") from exc
    try:
        state = load_file(str(weights))
        network.load_state_dict(state, strict=True)
    except (RuntimeError, OSError) as exc:
        raise ArtifactError(f"weights in {directory} do not fit the manifest: {exc}") from exc
    network.eval()
    return manifest, network
