"""Finding archive studies under the configured roots, and hashing their content.

A study is one of:

* ``png``: a MIP image file (``*.png``);
* ``nifti``: a 3D PET volume (``*.nii``, ``*.nii.gz``);
* ``dicom``: a folder holding the files of one PET series (``*.dcm``, or files with the
  ``DICM`` marker at byte 128).

Every path is resolved and must stay inside its root: a symlink that leads out of the
root is reported and never read. Unreadable entries are reported as :class:`Problem`
and skipped; nothing here raises for a bad file.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

logger = logging.getLogger(__name__)

PNG = "png"
NIFTI = "nifti"
DICOM = "dicom"

_DICOM_MAGIC_OFFSET = 128
_CHUNK = 1 << 20


class ConfinementError(ValueError):
    """A path resolves outside the archive root it was found under."""


@dataclass(frozen=True)
class Problem:
    """An archive entry that was skipped, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class Candidate:
    """A study found on disk.

    Attributes:
        kind: ``png``, ``nifti`` or ``dicom``.
        root: The resolved root it was found under.
        path: The resolved file (png, nifti) or folder (dicom).
        files: The resolved files that make up the study (one, or the series' files).
        mtime: Newest modification time of its files (POSIX seconds).
    """

    kind: str
    root: Path
    path: Path
    files: tuple[Path, ...] = field(default=())
    mtime: float = 0.0

    @property
    def rel_path(self) -> str:
        """The study's path relative to its root (POSIX form)."""
        return self.path.relative_to(self.root).as_posix() or "."


def confine(path: Path, root: Path) -> Path:
    """Resolve ``path`` (following symlinks) and check that it stays inside ``root``.

    Args:
        path: A path found under ``root``.
        root: A resolved archive root.

    Returns:
        The resolved path.

    Raises:
        ConfinementError: It resolves outside ``root``.
        OSError: It does not exist or cannot be resolved.
    """
    resolved = path.resolve(strict=True)
    if not resolved.is_relative_to(root):
        raise ConfinementError(f"{path} resolves to {resolved}, outside the archive root {root}")
    return resolved


def resolve_roots(roots: Sequence[Path]) -> tuple[list[Path], list[Problem]]:
    """Resolve the configured roots; a missing one is a problem, not an error."""
    resolved: list[Path] = []
    problems: list[Problem] = []
    for root in roots:
        try:
            path = root.resolve(strict=True)
        except OSError as exc:
            problems.append(Problem(str(root), f"archive root unavailable: {exc}"))
            continue
        if not path.is_dir():
            problems.append(Problem(str(root), "archive root is not a folder"))
            continue
        if path not in resolved:
            resolved.append(path)
    return resolved, problems


def classify(path: Path) -> str | None:
    """The study kind of a single file by its name (and DICOM marker), or None."""
    name = path.name.lower()
    if name.endswith(".png"):
        return PNG
    if name.endswith((".nii", ".nii.gz")):
        return NIFTI
    if name.endswith(".dcm"):
        return DICOM
    if "." not in name:  # DICOM files often have no suffix: look for the marker
        try:
            with path.open("rb") as handle:
                handle.seek(_DICOM_MAGIC_OFFSET)
                return DICOM if handle.read(4) == b"DICM" else None
        except OSError:
            return None
    return None


def discover(
    roots: Sequence[Path],
    since: datetime | None = None,
    folders: Sequence[Path] | None = None,
) -> tuple[list[Candidate], list[Problem]]:
    """Walk the roots (or only ``folders`` inside them) and return the studies found.

    Directory symlinks are not followed (what they point to inside a root is found at
    its real place); file symlinks are followed only when they stay inside the root.
    Paths are always relative to the root, also when only a folder is walked.

    Args:
        roots: Resolved archive roots (see :func:`resolve_roots`).
        since: Only studies whose newest file was modified at or after this time.
        folders: Resolved folders to walk instead of the whole roots; each must lie in
            one of ``roots`` (others are reported).

    Returns:
        The candidates in a stable order, and the entries skipped with the reason.
    """
    candidates: list[Candidate] = []
    problems: list[Problem] = []
    cutoff = since.timestamp() if since is not None else None
    walks: list[tuple[Path, Path]] = []
    for start in folders if folders is not None else roots:
        root = next((r for r in roots if start.is_relative_to(r)), None)
        if root is None:
            problems.append(Problem(str(start), "not inside an archive root"))
        else:
            walks.append((start, root))
    for start, root in walks:
        for folder, dirnames, filenames in os.walk(start, onerror=_walk_error(problems)):
            dirnames.sort()
            base = Path(folder)
            for name in dirnames:
                link = base / name
                if link.is_symlink():
                    _check_dir_link(link, root, problems)
            found = _folder_studies(root, base, sorted(filenames), problems)
            candidates.extend(c for c in found if cutoff is None or c.mtime >= cutoff)
    return candidates, problems


def _walk_error(problems: list[Problem]) -> Callable[[OSError], None]:
    def on_error(exc: OSError) -> None:
        problems.append(Problem(str(exc.filename), f"cannot list folder: {exc.strerror}"))

    return on_error


def _check_dir_link(link: Path, root: Path, problems: list[Problem]) -> None:
    try:
        confine(link, root)
    except (ConfinementError, OSError) as exc:
        problems.append(Problem(str(link), f"skipped folder symlink: {exc}"))


def _folder_studies(
    root: Path, folder: Path, names: Iterable[str], problems: list[Problem]
) -> list[Candidate]:
    out: list[Candidate] = []
    dicom_files: list[Path] = []
    for name in names:
        path = folder / name
        try:
            resolved = confine(path, root)
            if not resolved.is_file():
                continue
            kind = classify(resolved)
            mtime = resolved.stat().st_mtime
        except ConfinementError as exc:
            problems.append(Problem(str(path), str(exc)))
            continue
        except OSError as exc:
            problems.append(Problem(str(path), f"unreadable: {exc.strerror or exc}"))
            continue
        if kind == DICOM:
            dicom_files.append(resolved)
        elif kind is not None:
            # a symlink keeps its own name and place: that is where the study "is"
            shown = folder.resolve() / name
            out.append(Candidate(kind, root, shown, (resolved,), mtime))
    if dicom_files:
        mtime = max(f.stat().st_mtime for f in dicom_files)
        out.append(Candidate(DICOM, root, folder.resolve(), tuple(dicom_files), mtime))
    return out


def _file_digest(path: Path) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.digest()


def content_hash(candidate: Candidate) -> str:
    """SHA-256 (hex) of the study's content, independent of where it lies.

    A file's hash is that of its bytes; a DICOM series' is the hash of its files'
    sorted hashes, so renaming or re-ordering files does not make a series new.

    Raises:
        OSError: A file cannot be read.
        ConfinementError: A file was swapped for a symlink out of the root.
    """
    for path in candidate.files:
        confine(path, candidate.root)
    if candidate.kind != DICOM:
        return _file_digest(candidate.files[0]).hex()
    digest = hashlib.sha256(b"dicom-series\0")
    for file_digest in sorted(_file_digest(p) for p in candidate.files):
        digest.update(file_digest)
    return digest.hexdigest()


def read_confined(path: Path, root: Path) -> bytes:
    """Read a whole file after checking it still lies inside ``root``."""
    return confine(path, root).read_bytes()
