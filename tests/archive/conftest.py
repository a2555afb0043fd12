"""Synthetic archive studies: PET volumes with a known hot spot as NIfTI and DICOM, PNGs."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from config.settings import PacsEndpoint, Settings
from core.dispatch import Dispatcher
from tests.archive.orthanc import Orthanc, skip_without_orthanc
from tests.conftest import png_bytes

#: Volume size (RAS+: x towards the patient's right, y anterior, z superior) and voxels.
SHAPE = (60, 40, 120)
SPACING = (4.0, 4.0, 3.0)
#: Hot spot, in RAS+ voxel indices: on the patient's right (high x), below the head.
SPOT = (slice(44, 48), slice(18, 22), slice(92, 96))
SPOT_VALUE = 12.0
#: A "brain" of SUV 8 at the top, ~7 % of the MIP's body: the percentile clip lands
#: there, as it does on the brain and bladder of real studies.
BRAIN = (slice(18, 42), slice(8, 32), slice(104, 118))


@dataclass(frozen=True)
class Volume:
    """A synthetic PET volume in RAS+ with its affine."""

    data: np.ndarray
    affine: np.ndarray


def pet_volume(seed: int | None = None) -> Volume:
    """A body (ellipsoid, SUV 1-1.2 with noise), a brain of SUV 8, one hot spot of SUV 12."""
    rng = np.random.default_rng(seed if seed is not None else secrets.randbits(32))
    x, y, z = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    body = ((x - 30) / 26) ** 2 + ((y - 20) / 16) ** 2 + ((z - 60) / 58) ** 2 < 1
    data = np.where(body, 1.0 + 0.2 * rng.random(SHAPE), 0.0).astype(np.float32)
    data[BRAIN] = np.where(body[BRAIN], 8.0, 0.0)
    data[SPOT] = SPOT_VALUE
    return Volume(data, np.diag([*SPACING, 1.0]))


def expected_spot_pixel(width: int = 400) -> tuple[float, float]:
    """Where the spot's centre must land in the rendered MIP: (row, column)."""
    x_centre = (SPOT[0].start + SPOT[0].stop - 1) / 2
    z_centre = (SPOT[2].start + SPOT[2].stop - 1) / 2
    height = width * (SHAPE[2] * SPACING[2]) / (SHAPE[0] * SPACING[0])
    column = (SHAPE[0] - 1 - x_centre + 0.5) * width / SHAPE[0]  # patient's right: left
    row = (SHAPE[2] - 1 - z_centre + 0.5) * height / SHAPE[2]  # head: top
    return row, column


def write_nifti(path: Path, volume: Volume) -> Path:
    """Save the volume as NIfTI (``.nii`` or ``.nii.gz`` by the name)."""
    import nibabel as nib

    nib.save(nib.Nifti1Image(volume.data, volume.affine), str(path))
    return path


def write_dicom_series(folder: Path, volume: Volume) -> Path:
    """Save the volume as an axial PET series (LPS, one file per slice, uint16 + slope)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        PositronEmissionTomographyImageStorage,
        generate_uid,
    )

    folder.mkdir(parents=True, exist_ok=True)
    nx, ny, nz = volume.data.shape
    sx, sy, sz = SPACING
    series, study = generate_uid(), generate_uid()
    for k in range(nz):
        # rows run towards posterior (-y RAS), columns towards the patient's left (-x RAS)
        plane = volume.data[::-1, ::-1, k].T
        slope = float(plane.max()) / 60000 if plane.max() > 0 else 1.0
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = PositronEmissionTomographyImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "PT"
        ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.PatientID = series, study, "SYNTH"
        ds.Rows, ds.Columns = ny, nx
        ds.PixelSpacing = [sy, sx]
        ds.SliceThickness = sz
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-(nx - 1) * sx, -(ny - 1) * sy, k * sz]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept, ds.Units = slope, 0, "GML"
        ds.PixelData = np.round(plane / slope).astype(np.uint16).tobytes()
        # file names out of slice order: the reader must sort by position
        ds.save_as(str(folder / f"IM{(k * 37) % nz:04d}.dcm"), enforce_file_format=True)
    return folder


def unique_png(height: int = 300, width: int = 400) -> bytes:
    """A MIP-like PNG (white background, gray body) that no other test writes."""
    rng = np.random.default_rng(secrets.randbits(32))
    image = np.full((height, width), 255, np.uint8)
    image[40:-40, 120:280] = rng.integers(150, 240, (height - 80, 160), dtype=np.uint8)
    return png_bytes(image)


@pytest.fixture
def archive_root(tmp_path: Path) -> Path:
    """An empty archive root folder."""
    root = tmp_path / "archive"
    root.mkdir()
    return root


@pytest.fixture
def archive_settings(settings: Settings, archive_root: Path) -> Settings:
    """Session settings with ``archive_root`` as the archive and a nightly queue no worker
    consumes (the scan's chunks stay in Redis to be counted)."""
    return settings.model_copy(
        update={
            "archive_roots": str(archive_root),
            "nightly_queue": f"tumorseg.test.archive.{secrets.token_hex(4)}",
        }
    )


@pytest.fixture
def dispatcher(archive_settings: Settings) -> Iterator[Dispatcher]:
    """Chunks go to the real Redis."""
    dispatcher = Dispatcher(archive_settings)
    yield dispatcher
    dispatcher.close()


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    """A fresh Orthanc with DICOMweb for one test (skipped where it is not installed)."""
    skip_without_orthanc()
    server = Orthanc(tmp_path / "orthanc")
    server.start()
    yield server
    server.stop(graceful=False)


@pytest.fixture
def pacs_settings(archive_settings: Settings, orthanc: Orthanc) -> Settings:
    """The archive settings with ``orthanc`` as the PACS ``test-pacs`` (export on), and an
    interactive queue of their own, so no worker of the session takes their exports."""
    endpoint = PacsEndpoint(name="test-pacs", url=orthanc.dicomweb_url, export=True)
    return archive_settings.model_copy(
        update={
            "pacs_endpoints": [endpoint],
            "interactive_queue": f"tumorseg.test.pacs.{secrets.token_hex(4)}",
        }
    )
