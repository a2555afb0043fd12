"""Discovery, content hashing and root confinement of archive studies."""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from archive import sources
from archive.scan import ScanError, select_roots
from config.settings import Settings
from tests.archive.conftest import pet_volume, unique_png, write_dicom_series, write_nifti


def _settings(**values: Any) -> Settings:
    return Settings(**values)


def _populate(root: Path) -> None:
    (root / "2026" / "11").mkdir(parents=True)
    (root / "2026" / "11" / "mip_a.png").write_bytes(unique_png())
    write_nifti(root / "2026" / "11" / "pet_b.nii.gz", pet_volume(seed=5))
    write_dicom_series(root / "2026" / "11" / "series_c", pet_volume(seed=6))
    (root / "2026" / "notes.txt").write_text("not a study")


def test_discovers_one_study_per_png_nifti_and_dicom_folder(archive_root: Path) -> None:
    _populate(archive_root)
    found, problems = sources.discover([archive_root.resolve()])
    assert problems == []
    by_kind = {c.kind: c for c in found}
    assert sorted(by_kind) == ["dicom", "nifti", "png"]
    assert len(found) == 3
    assert by_kind["png"].rel_path == "2026/11/mip_a.png"
    assert by_kind["nifti"].rel_path == "2026/11/pet_b.nii.gz"
    assert by_kind["dicom"].rel_path == "2026/11/series_c"
    assert len(by_kind["dicom"].files) == pet_volume().data.shape[2]  # every slice


def test_content_hash_ignores_names_and_places(archive_root: Path, tmp_path: Path) -> None:
    series = write_dicom_series(archive_root / "series", pet_volume(seed=7))
    (archive_root / "a.png").write_bytes(data := unique_png())
    before = {c.kind: sources.content_hash(c) for c in sources.discover([archive_root])[0]}
    for i, path in enumerate(sorted(series.iterdir())):
        path.rename(series / f"renamed_{i:04d}")  # no suffix: found by the DICM marker
    (archive_root / "a.png").rename(archive_root / "moved.png")
    after = {c.kind: sources.content_hash(c) for c in sources.discover([archive_root])[0]}
    assert before == after
    assert len(after["png"]) == 64
    (archive_root / "moved.png").write_bytes(data + b"\0")  # one byte more: new content
    changed = {c.kind: sources.content_hash(c) for c in sources.discover([archive_root])[0]}
    assert changed["png"] != after["png"]
    assert changed["dicom"] == after["dicom"]


def test_symlinks_out_of_the_root_are_reported_and_never_read(
    archive_root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(unique_png())
    (archive_root / "inside.png").write_bytes(unique_png())
    (archive_root / "escape.png").symlink_to(outside / "secret.png")
    (archive_root / "escape_dir").symlink_to(outside, target_is_directory=True)
    (archive_root / "alias.png").symlink_to(archive_root / "inside.png")  # stays inside
    found, problems = sources.discover([archive_root.resolve()])
    assert sorted(c.rel_path for c in found) == ["alias.png", "inside.png"]
    reasons = {Path(p.path).name: p.reason for p in problems}
    assert set(reasons) == {"escape.png", "escape_dir"}
    assert "outside the archive root" in reasons["escape.png"]
    assert all(str(outside) not in str(f) for c in found for f in c.files)
    with pytest.raises(sources.ConfinementError):
        sources.read_confined(archive_root / "escape.png", archive_root.resolve())


def test_since_keeps_only_recently_modified_studies(archive_root: Path) -> None:
    old, new = archive_root / "old.png", archive_root / "new.png"
    old.write_bytes(unique_png())
    new.write_bytes(unique_png())
    a_day_ago = time.time() - 86400
    os.utime(old, (a_day_ago, a_day_ago))
    since = datetime.fromtimestamp(time.time() - 3600)
    found, _ = sources.discover([archive_root], since=since)
    assert [c.rel_path for c in found] == ["new.png"]


def test_roots_come_from_the_settings_and_overrides_stay_inside(
    archive_root: Path, tmp_path: Path
) -> None:
    (archive_root / "ward").mkdir()
    settings = _settings(archive_roots=f"{archive_root}, {tmp_path / 'missing'}")
    roots, folders, problems = select_roots(settings)
    assert roots == [archive_root.resolve()]
    assert folders is None
    assert "unavailable" in problems[0].reason  # a missing root is reported, not fatal
    (archive_root / "ward" / "a.png").write_bytes(unique_png())
    (archive_root / "b.png").write_bytes(unique_png())
    roots, folders, _ = select_roots(settings, [archive_root / "ward"])
    assert roots == [archive_root.resolve()]
    assert folders == [(archive_root / "ward").resolve()]
    found, _ = sources.discover(roots, folders=folders)
    assert [c.rel_path for c in found] == ["ward/a.png"]  # relative to the root
    with pytest.raises(ScanError, match="not inside a configured archive root"):
        select_roots(settings, [tmp_path])
    with pytest.raises(ScanError, match="TUMORSEG_ARCHIVE_ROOTS"):
        select_roots(_settings(archive_roots=""))
