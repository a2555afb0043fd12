"""Model artifacts with torch: writing and loading the weights beside the manifest.

A single network is `model.safetensors`; an ensemble holds K networks of the manifest's
architecture instead, one fp16 `member-K.safetensors` each, listed with their hashes in
the manifest's `members` (the predictor averages their probabilities). The manifest
itself, torch-free, is `model/manifest.py`. Training writes a new directory per version
and never overwrites an old one.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from model.manifest import (
    MANIFEST_NAME,
    ArtifactError,
    Manifest,
    artifact_dir,
    members_sha256,
    read_manifest,
)
from model.network import build_network

WEIGHTS_NAME = "model.safetensors"
#: File name of ensemble member k (1-based).
MEMBER_NAME = "member-{}.safetensors"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_artifact(
    network: torch.nn.Module,
    manifest: Manifest,
    parent: Path,
    name: str | None = None,
    suffix: str = "",
) -> Path:
    """Write weights and manifest into a new directory under `parent`.

    The version is derived from the date and the weights' hash. An existing directory is
    never overwritten.

    Args:
        network: The trained network.
        manifest: Its manifest; `version`, `weights_sha256` and `created_at` are filled in.
        parent: Directory that receives the new artifact directory.
        name: Directory name; defaults to the version.
        suffix: Appended to the version: tells apart artifacts of the same weights whose
            post-processing differs.

    Returns:
        The new artifact directory.

    Raises:
        ArtifactError: The target directory already exists.
    """
    tmp = _new_tmp_dir(Path(parent))
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    save_file(state, str(tmp / WEIGHTS_NAME))
    return _publish(tmp, manifest, _sha256(tmp / WEIGHTS_NAME), "attention-unet", name, suffix)


def save_ensemble(
    networks: Sequence[torch.nn.Module],
    manifest: Manifest,
    parent: Path,
    name: str | None = None,
    folds: Sequence[int | None] | None = None,
) -> Path:
    """Write K member networks (fp16 safetensors each) and their manifest into a new
    directory under `parent`.

    Floating tensors are stored as float16 (half the bytes; `load_members` casts them back
    to float32). The version is `attention-unet-ens-YYYYMMDD-<hash over the members'
    hashes>`. An existing directory is never overwritten.

    Args:
        networks: The members, each of `manifest.architecture`; the first is the one the
            `fast` setting (one member) runs.
        manifest: Their manifest; `members`, `version`, `weights_sha256` and `created_at`
            are filled in.
        parent: Directory that receives the new artifact directory.
        name: Directory name; defaults to the version.
        folds: Each member's held-out fold (None where none was held out).

    Returns:
        The new artifact directory.

    Raises:
        ValueError: No networks, or `folds` of another length.
        ArtifactError: A member does not fit the architecture or float16, or the target
            directory already exists.
    """
    if not networks:
        raise ValueError("an ensemble needs at least one network")
    if folds is not None and len(folds) != len(networks):
        raise ValueError(f"{len(folds)} folds for {len(networks)} networks")
    reference = _build(manifest.architecture)
    states = []
    for k, network in enumerate(networks, 1):
        states.append(_half_state(network, MEMBER_NAME.format(k)))
        try:
            reference.load_state_dict(states[-1], strict=True)
        except RuntimeError as exc:
            raise ArtifactError(f"member {k} does not fit the manifest: {exc}") from exc
    tmp = _new_tmp_dir(Path(parent))
    manifest.members = []
    for k, state in enumerate(states, 1):
        file = MEMBER_NAME.format(k)
        save_file(state, str(tmp / file))
        fold = folds[k - 1] if folds is not None else None
        manifest.members.append({"weights": file, "sha256": _sha256(tmp / file), "fold": fold})
    sha = members_sha256([m["sha256"] for m in manifest.members])
    return _publish(tmp, manifest, sha, "attention-unet-ens", name)


def _half_state(network: torch.nn.Module, file: str) -> dict[str, torch.Tensor]:
    """The network's state on the CPU with floating tensors in float16."""
    state = {}
    for key, value in network.state_dict().items():
        t = value.detach().cpu()
        if t.is_floating_point():
            half = t.to(torch.float16)
            if not bool(torch.isfinite(half).all()) and bool(torch.isfinite(t).all()):
                raise ArtifactError(f"{file}: {key} overflows float16")
            t = half
        state[key] = t.contiguous()
    return state


def _new_tmp_dir(parent: Path) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".tmp-{datetime.now(UTC).strftime('%Y%m%d%H%M%S%f')}"
    tmp.mkdir()
    return tmp


def _publish(
    tmp: Path, manifest: Manifest, sha: str, prefix: str, name: str | None, suffix: str = ""
) -> Path:
    """Stamp the manifest (hash, date, version), write it, and move `tmp` into place."""
    now = datetime.now(UTC)
    manifest.weights_sha256 = sha
    manifest.created_at = now.isoformat(timespec="seconds")
    manifest.version = f"{prefix}-{now.strftime('%Y%m%d')}-{sha[:8]}{suffix}"
    (tmp / MANIFEST_NAME).write_text(manifest.to_json())
    target = tmp.parent / (name or manifest.version)
    if target.exists():
        shutil.rmtree(tmp)
        raise ArtifactError(f"refusing to overwrite existing artifact {target}")
    tmp.rename(target)
    return target


def load_artifact(directory: Path | None = None) -> tuple[Manifest, torch.nn.Module]:
    """Load a single-network artifact: check the manifest and the weights, rebuild the
    network. An ensemble is refused: `load_members` loads it.

    Args:
        directory: Artifact directory; None means the bundled default.

    Returns:
        (manifest, network in eval mode on the CPU).

    Raises:
        ArtifactError: An ensemble, missing files, a weights hash mismatch, or weights
            that do not fit the manifest's architecture.
    """
    directory = artifact_dir(directory)
    manifest = read_manifest(directory)
    if manifest.members:
        raise ArtifactError(
            f"{directory} is an ensemble of {manifest.n_members} networks: load it with "
            "model.artifact.load_members"
        )
    return manifest, _load_network(directory, WEIGHTS_NAME, manifest)


def load_members(
    directory: Path | None = None, max_members: int = 0
) -> tuple[Manifest, list[torch.nn.Module]]:
    """Load any artifact's networks: the one of a single-network artifact, or an
    ensemble's members in manifest order, each checked against its hash.

    Args:
        directory: Artifact directory; None means the bundled default.
        max_members: Load at most this many members, the first ones (1 = the `fast`
            setting); 0 = all.

    Returns:
        (manifest, networks in eval mode on the CPU, at least one).

    Raises:
        ValueError: A negative `max_members`.
        ArtifactError: Missing or corrupt files (the message names the file), member
            hashes that do not match `weights_sha256`, or weights that do not fit the
            manifest's architecture.
    """
    if max_members < 0:
        raise ValueError(f"max_members must be >= 0, got {max_members}")
    directory = artifact_dir(directory)
    manifest = read_manifest(directory)
    if not manifest.members:
        return manifest, [_load_network(directory, WEIGHTS_NAME, manifest)]
    if members_sha256([m["sha256"] for m in manifest.members]) != manifest.weights_sha256:
        raise ArtifactError(
            f"the member hashes in {directory / MANIFEST_NAME} do not match its "
            "weights_sha256 (edited?)"
        )
    chosen = manifest.members[:max_members] if max_members else manifest.members
    return manifest, [_load_network(directory, m["weights"], manifest, m["sha256"]) for m in chosen]


def _build(architecture: dict[str, Any]) -> torch.nn.Module:
    try:
        return build_network(architecture)
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"manifest architecture is invalid: {exc}") from exc


def _load_network(
    directory: Path, file: str, manifest: Manifest, sha256: str | None = None
) -> torch.nn.Module:
    """One network of `manifest.architecture` from `directory / file`, hash checked
    (against `sha256`, else the manifest's `weights_sha256`), in float32 and eval mode."""
    weights = directory / file
    if not weights.is_file():
        raise ArtifactError(f"no {file} in {directory}")
    expected = sha256 if sha256 is not None else manifest.weights_sha256
    if expected and _sha256(weights) != expected:
        raise ArtifactError(f"{weights} does not match the manifest's sha256 (corrupt?)")
    network = _build(manifest.architecture)
    try:
        state = {
            k: v.float() if v.is_floating_point() else v for k, v in load_file(str(weights)).items()
        }
        network.load_state_dict(state, strict=True)
    except (RuntimeError, OSError) as exc:
        raise ArtifactError(f"weights {weights} do not fit the manifest: {exc}") from exc
    network.eval()
    return network
