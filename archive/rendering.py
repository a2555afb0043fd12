"""PET volume (NIfTI or DICOM series) to a MIP PNG that looks like the training images.

The mapping (see ``docs/ARCHIVE.md``):

1. Load the volume with its voxel-to-patient affine; reorient it to RAS+ (nibabel's
   closest canonical: axis 0 towards the patient's Right, 1 Anterior, 2 Superior).
2. MIP as the DM i AI data describes: ``np.max(pet, axis=1)``, the coronal projection.
3. Orient like the PNGs: head up, the patient's right on the image's left (radiological
   convention, checked on the DM i AI images: liver on the left, heart on the right).
4. Resize to 400 px wide, height from the physical aspect (voxel spacing).
5. Intensity: negatives to 0, divide by the clip value (a fixed ``suv_max``, else the
   ``clip_percentile`` of the body pixels, i.e. those above 0), clip to [0, 1], and
   invert: ``gray = 255 * (1 - v)``. Background is white, high uptake dark, 8-bit.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

#: Width of every DM i AI image, pixels.
MIP_WIDTH = 400
#: Largest volume accepted, voxels (about 1.6 GB as float32).
MAX_VOXELS = 400_000_000


class RenderError(ValueError):
    """A file or series that cannot be rendered; the message says why, for a human."""


@dataclass(frozen=True)
class RenderOptions:
    """How MIP values become gray levels.

    Attributes:
        clip_percentile: Percentile of the body pixels rendered black (95 reproduces the
            share of saturated pixels in the DM i AI images, about 5 %).
        suv_max: Fixed value rendered black instead (e.g. an SUV of 10); None: percentile.
        width: Output width in pixels.
        max_height: Largest output height in pixels.
    """

    clip_percentile: float = 95.0
    suv_max: float | None = None
    width: int = MIP_WIDTH
    max_height: int = 4096


def canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, tuple[float, ...]]:
    """Reorient a volume to RAS+ and return it with its voxel sizes (mm).

    Args:
        data: 3D array indexed (i, j, k).
        affine: 4x4 voxel-to-RAS+ affine (NIfTI convention).

    Returns:
        The reoriented array and the voxel sizes along its three axes.
    """
    import nibabel as nib

    image = nib.as_closest_canonical(nib.Nifti1Image(data, affine))  # type: ignore[no-untyped-call]  # nibabel
    zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    return np.asanyarray(image.dataobj), zooms


def coronal_mip(volume_ras: np.ndarray) -> np.ndarray:
    """The DM i AI projection: maximum over the anterior-posterior axis (axis 1 in RAS+)."""
    mip: np.ndarray = np.max(volume_ras, axis=1)
    return mip


def orient_mip(mip: np.ndarray) -> np.ndarray:
    """(x: right, z: superior) MIP to image rows top=head, columns left=patient's right."""
    return mip[::-1, ::-1].T


def intensity_to_gray(image: np.ndarray, options: RenderOptions) -> np.ndarray:
    """Map MIP values to inverted 8-bit gray: 255 background, 0 at and above the clip.

    Raises:
        RenderError: Nothing above zero (an empty or all-negative volume).
    """
    values = np.nan_to_num(image.astype(np.float32, copy=False), nan=0.0, posinf=0.0)
    values = np.maximum(values, 0.0)
    body = values[values > 0]
    if body.size == 0:
        raise RenderError("the volume has no voxel above 0: nothing to render")
    clip = options.suv_max or float(np.percentile(body, options.clip_percentile))
    if not clip > 0:
        raise RenderError("the clip value is not positive")
    scaled: np.ndarray = np.clip(values / clip, 0.0, 1.0)
    return np.round(255.0 * (1.0 - scaled)).astype(np.uint8)


@dataclass(frozen=True)
class RenderedStudy:
    """A rendered study: its MIP PNG and the pixel size of that PNG in mm.

    ``mip`` is the unclipped MIP at the PNG's size in the volume's units (float32), the
    values the gray levels were drawn from: lesion SUVs are read from it
    (``archive/suv.py``).
    """

    png: bytes
    spacing_mm: tuple[float, float]  # rows (head to feet), columns (right to left)
    mip: np.ndarray | None = None


def render_volume(
    data: np.ndarray, affine: np.ndarray, options: RenderOptions | None = None
) -> np.ndarray:
    """Render a PET volume as an inverted MIP image like the DM i AI PNGs.

    Args:
        data: 3D array (or 4D with one frame) of uptake values.
        affine: 4x4 voxel-to-RAS+ affine.
        options: Intensity and size options.

    Returns:
        uint8 (H, W) image, W = ``options.width``.

    Raises:
        RenderError: Not a single 3D volume, too big, or empty.
    """
    return render_volume_and_spacing(data, affine, options)[0]


def render_volume_and_spacing(
    data: np.ndarray, affine: np.ndarray, options: RenderOptions | None = None
) -> tuple[np.ndarray, tuple[float, float]]:
    """`render_volume`'s image with its pixel size in mm (rows, columns): the imaged
    extent over the rendered size, from the voxel sizes."""
    gray, spacing, _ = render_mip(data, affine, options)
    return gray, spacing


def render_mip(
    data: np.ndarray, affine: np.ndarray, options: RenderOptions | None = None
) -> tuple[np.ndarray, tuple[float, float], np.ndarray]:
    """`render_volume_and_spacing`, and the unclipped MIP the gray levels come from.

    Returns:
        The uint8 image, its pixel size in mm (rows, columns), and the MIP resized to
        the image's size (float32, the volume's units).

    Raises:
        RenderError: Not a single 3D volume, too big, or empty.
    """
    options = options or RenderOptions()
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3 or min(data.shape) < 1:
        raise RenderError(f"expected one 3D volume, got shape {tuple(data.shape)}")
    if data.size > MAX_VOXELS:
        raise RenderError(f"volume of {data.size} voxels is over the limit of {MAX_VOXELS}")
    volume, (sx, _sy, sz) = canonical(np.asarray(data, dtype=np.float32), affine)
    image = orient_mip(coronal_mip(volume))  # rows: z (sz mm), columns: x (sx mm)
    rows, cols = image.shape
    height = round(options.width * (rows * sz) / (cols * sx))
    height = int(min(max(height, 16), options.max_height))
    resized = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32), mode="F").resize(
        (options.width, height), Image.Resampling.BILINEAR
    )
    spacing = (rows * sz / height, cols * sx / options.width)
    values = np.asarray(resized, dtype=np.float32)
    return intensity_to_gray(values, options), spacing, values


def encode_png(gray: np.ndarray) -> bytes:
    """8-bit grayscale PNG bytes of a uint8 image."""
    buffer = io.BytesIO()
    Image.fromarray(gray, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def load_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI volume (``.nii`` / ``.nii.gz``) as float32 data and its affine.

    Raises:
        RenderError: Not a readable NIfTI file.
    """
    import nibabel as nib

    try:
        image: Any = nib.load(str(path))
        data = np.asarray(image.dataobj, dtype=np.float32)  # applies scl_slope/inter
        affine = np.asarray(image.affine, dtype=np.float64)
    except Exception as exc:  # nibabel raises many types for broken files
        raise RenderError(f"not a readable NIfTI volume: {type(exc).__name__}: {exc}") from exc
    return data, affine


def load_dicom_series(files: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Read the slices of one PET DICOM series into a volume and its RAS+ affine.

    Slices are ordered along the slice normal by ImagePositionPatient; each slice's
    RescaleSlope/Intercept is applied (PET often scales every slice on its own).

    Raises:
        RenderError: Unreadable files, not PET, several series, or inconsistent slices.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    datasets = []
    for path in files:
        try:
            datasets.append(pydicom.dcmread(str(path)))
        except (InvalidDicomError, OSError, ValueError) as exc:
            raise RenderError(f"{path.name} is not a readable DICOM file: {exc}") from exc
    return volume_from_datasets(datasets)


def volume_from_datasets(datasets: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """The volume and RAS+ affine of one PET series' instances (pydicom datasets with
    pixel data), as :func:`load_dicom_series` reads them from files.

    Raises:
        RenderError: Not PET, several series, or inconsistent or malformed slices.
    """
    if not datasets:
        raise RenderError("the series has no instances")
    modalities = {str(getattr(ds, "Modality", "?")) for ds in datasets}
    if modalities != {"PT"}:
        raise RenderError(f"not a PET series: modality {', '.join(sorted(modalities))}")
    series = {str(getattr(ds, "SeriesInstanceUID", "")) for ds in datasets}
    if len(series) != 1:
        raise RenderError(f"the folder holds {len(series)} series; expected one")
    try:
        return _stack(datasets)
    except RenderError:
        raise
    except Exception as exc:  # missing or malformed geometry / pixel data
        raise RenderError(f"cannot build a volume: {type(exc).__name__}: {exc}") from exc


def _stack(datasets: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    first = datasets[0]
    iop = np.asarray(first.ImageOrientationPatient, dtype=np.float64)
    row_dir, col_dir = iop[:3], iop[3:]  # LPS directions of increasing column / row index
    normal = np.cross(row_dir, col_dir)
    positions = [np.asarray(ds.ImagePositionPatient, dtype=np.float64) for ds in datasets]
    order = np.argsort([float(p @ normal) for p in positions])
    slices = []
    for index in order:
        ds = datasets[index]
        pixels = ds.pixel_array.astype(np.float32)
        slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
        intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
        slices.append(pixels * slope + intercept)
    if len({s.shape for s in slices}) != 1:
        raise RenderError("slices of different sizes")
    row_spacing, col_spacing = (float(v) for v in first.PixelSpacing)
    ordered = [positions[i] for i in order]
    if len(ordered) > 1:
        step = (ordered[-1] - ordered[0]) / (len(ordered) - 1)
    else:
        step = normal * float(getattr(first, "SliceThickness", 1.0) or 1.0)
    if not np.linalg.norm(step) > 0:
        raise RenderError("slices share one position")
    volume = np.stack(slices, axis=-1).transpose(1, 0, 2)  # (column, row, slice)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_spacing
    lps[:3, 1] = col_dir * row_spacing
    lps[:3, 2] = step
    lps[:3, 3] = ordered[0]
    return volume, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # LPS -> RAS


def probe_study(kind: str, files: Sequence[Path]) -> None:
    """Cheap check for a dry run: headers only, no pixel data.

    Raises:
        RenderError: The header already shows the study cannot be rendered.
    """
    if kind == "nifti":
        import nibabel as nib

        try:
            image: Any = nib.load(str(files[0]))
            shape = image.shape
        except Exception as exc:  # nibabel raises many types for broken files
            raise RenderError(f"not a readable NIfTI volume: {type(exc).__name__}") from exc
        if not (len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)):
            raise RenderError(f"expected one 3D volume, got shape {tuple(shape)}")
    elif kind == "dicom":
        import pydicom

        for path in files:
            try:
                ds = pydicom.dcmread(str(path), stop_before_pixels=True)
            except Exception as exc:  # pydicom raises many types for broken files
                raise RenderError(f"{path.name} is not a readable DICOM file") from exc
            if getattr(ds, "Modality", None) != "PT":
                raise RenderError(f"not a PET series: modality {getattr(ds, 'Modality', '?')}")


def render_study(kind: str, files: Sequence[Path], options: RenderOptions) -> RenderedStudy:
    """Render a NIfTI file or a DICOM series to MIP PNG bytes with their pixel size.

    Args:
        kind: ``nifti`` or ``dicom``.
        files: The file (nifti) or the series' files (dicom), already confined.
        options: Intensity and size options.

    Returns:
        The PNG bytes of the inverted MIP and its pixel spacing.

    Raises:
        RenderError: The study cannot be rendered.
    """
    if kind == "nifti":
        data, affine = load_nifti(files[0])
    elif kind == "dicom":
        data, affine = load_dicom_series(files)
    else:
        raise RenderError(f"cannot render a study of kind {kind!r}")
    gray, spacing, mip = render_mip(data, affine, options)
    return RenderedStudy(encode_png(gray), spacing, mip)


def render_datasets(datasets: Sequence[Any], options: RenderOptions) -> RenderedStudy:
    """Render one PET series given as pydicom datasets (e.g. retrieved over DICOMweb)
    exactly as a folder's DICOM series: :func:`volume_from_datasets`, then the MIP.

    Raises:
        RenderError: The series cannot be rendered.
    """
    data, affine = volume_from_datasets(datasets)
    gray, spacing, mip = render_mip(data, affine, options)
    return RenderedStudy(encode_png(gray), spacing, mip)
