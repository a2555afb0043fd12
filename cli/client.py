"""HTTP client helpers shared by ``submit``, ``status`` and ``demo``: CLI output lives here."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from api.services.labels import LabelMatchError, match_labels
from cli.tables import format_table

IMAGE_SUFFIXES = {".png"}
FINISHED = {"succeeded", "partially_failed", "failed", "cancelled"}


class ClientError(RuntimeError):
    """The API refused a request or could not be reached."""


def collect_images(paths: Sequence[Path]) -> list[Path]:
    """Files named on the command line; a directory means all of its PNG images."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            out.append(path)
        else:
            raise ClientError(f"{path} does not exist")
    if not out:
        raise ClientError("no PNG images found in " + ", ".join(map(str, paths)))
    return out


def select_labels(images: Sequence[Path], labels_dir: Path | None) -> list[Path]:
    """The labels in ``labels_dir`` that match one of ``images`` by name or number."""
    if labels_dir is None:
        return []
    names = [p.name for p in images]
    chosen = []
    for label in collect_images([labels_dir]):
        try:
            if match_labels(names, [label.name], allow_order=False):
                chosen.append(label)
        except LabelMatchError:
            continue
    return chosen


def auth_headers(key: str | None) -> dict[str, str]:
    """The ``Authorization`` header for an API key (none without a key)."""
    return {"Authorization": f"Bearer {key}"} if key else {}


def _raise_for(response: httpx.Response) -> None:
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text
        raise ClientError(f"HTTP {response.status_code}: {detail}")


def submit(
    url: str,
    images: Sequence[Path],
    labels: Sequence[Path],
    key: str | None = None,
    name: str | None = None,
    spacing: str | None = None,
) -> dict[str, Any]:
    """POST the studies (and labels) as one job with API key ``key``; returns the job JSON.

    Args:
        url: The API's base URL.
        images: The studies.
        labels: Their labels (matched by the API by name or number).
        key: The API key.
        name: What to call the job.
        spacing: The studies' pixel size in mm, ``S`` or ``ROWS,COLUMNS`` (the API checks it).
    """
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in images]
    files += [("labels", (p.name, p.read_bytes(), "image/png")) for p in labels]
    form = {k: v for k, v in (("name", name), ("spacing_mm", spacing)) if v is not None}
    try:
        response = httpx.post(
            f"{url.rstrip('/')}/v1/jobs",
            files=files,
            data=form,
            headers=auth_headers(key),
            timeout=120,
        )
    except httpx.HTTPError as exc:
        raise ClientError(f"cannot reach the API at {url}: {exc}") from exc
    _raise_for(response)
    job: dict[str, Any] = response.json()
    return job


def list_jobs(url: str, key: str | None = None, limit: int = 20, offset: int = 0) -> dict[str, Any]:
    """GET one page of the jobs the key may see, newest first."""
    return _json("GET", url, "/v1/jobs", key, params={"limit": limit, "offset": offset})


def cancel(url: str, job_id: int, key: str | None = None) -> dict[str, Any]:
    """DELETE a job: its studies that have not started are cancelled; returns the job."""
    return _json("DELETE", url, f"/v1/jobs/{job_id}", key)


def _json(
    method: str, url: str, path: str, key: str | None, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    try:
        response = httpx.request(
            method, f"{url.rstrip('/')}{path}", params=params, headers=auth_headers(key), timeout=30
        )
    except httpx.HTTPError as exc:
        raise ClientError(f"cannot reach the API at {url}: {exc}") from exc
    _raise_for(response)
    body: dict[str, Any] = response.json()
    return body


def get_job(url: str, job_id: int, key: str | None = None, studies: bool = True) -> dict[str, Any]:
    """GET one job's JSON with API key ``key`` (without ``studies``: the status alone)."""
    try:
        response = httpx.get(
            f"{url.rstrip('/')}/v1/jobs/{job_id}",
            params=None if studies else {"studies": "false"},
            headers=auth_headers(key),
            timeout=30,
        )
    except httpx.HTTPError as exc:
        raise ClientError(f"cannot reach the API at {url}: {exc}") from exc
    _raise_for(response)
    job: dict[str, Any] = response.json()
    return job


def wait(
    url: str,
    job_id: int,
    timeout: float = 3600,
    poll: float = 0.5,
    key: str | None = None,
    check: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Poll the job's status with a progress bar until it finishes; returns the final
    JSON, studies included. ``check`` runs before every poll (it may raise: the demo's
    notices a dead API or worker)."""
    from tqdm import tqdm

    job = get_job(url, job_id, key, studies=False)
    deadline = time.monotonic() + timeout
    with tqdm(total=job["total"], desc=f"job {job_id}", unit="study", file=sys.stderr) as bar:
        while True:
            done = job["total"] - job["counts"]["queued"] - job["counts"]["running"]
            bar.update(done - bar.n)
            bar.set_postfix_str(job["status"])
            if job["status"] in FINISHED:
                return get_job(url, job_id, key)
            if time.monotonic() > deadline:
                raise ClientError(f"job {job_id} did not finish within {timeout:.0f}s")
            time.sleep(poll)
            if check is not None:
                check()
            job = get_job(url, job_id, key, studies=False)


def _get(url: str, path: str, key: str | None) -> bytes:
    try:
        response = httpx.get(f"{url.rstrip('/')}{path}", headers=auth_headers(key), timeout=60)
    except httpx.HTTPError as exc:
        raise ClientError(f"cannot reach the API at {url}: {exc}") from exc
    _raise_for(response)
    return response.content


def export(url: str, job_id: int, out: Path, key: str | None = None) -> list[Path]:
    """Write a job's tables and every succeeded study's mask and overlay to ``out``:
    ``results.csv``, ``lesions.csv`` (columns in docs/BIOMARKERS.md), and
    ``<study>_mask.png`` and ``<study>_overlay.png`` (names from the uploaded file's stem,
    with the study id added when two studies share a stem). Returns the files written."""
    job = get_job(url, job_id, key)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for table in ("results", "lesions"):
        path = out / f"{table}.csv"
        path.write_bytes(_get(url, f"/v1/jobs/{job_id}/{table}.csv", key))
        written.append(path)
    stems = [Path(s["filename"]).stem for s in job["studies"]]
    for study, stem in zip(job["studies"], stems, strict=True):
        if study["status"] != "succeeded":
            continue
        name = stem if stems.count(stem) == 1 else f"{stem}_{study['id']}"
        for kind in ("mask", "overlay"):
            path = out / f"{name}_{kind}.png"
            path.write_bytes(_get(url, f"/v1/studies/{study['id']}/{kind}.png", key))
            written.append(path)
    return written


def _fmt(value: Any, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def job_table(job: dict[str, Any]) -> str:
    """A plain-text table of the job's studies (a failed study's whole reason in its last
    column) and its totals."""
    rows = []
    for s in job["studies"]:
        m = s.get("metrics") or {}
        rows.append(
            (
                str(s["id"]),
                s["filename"],
                s["status"],
                _fmt(m.get("tumor_pixels")),
                _fmt(m.get("lesions")),
                _fmt(m.get("dice"), ".3f"),
                s.get("error") or "",
            )
        )
    header = ("study", "file", "status", "tumor px", "lesions", "dice", "error")
    agg = job.get("aggregates") or {}
    name = f" ({job['name']})" if job.get("name") else ""
    return "\n".join(
        [
            format_table(header, rows),
            "",
            f"job {job['id']}{name}: {job['status']}  counts={job['counts']}"
            f"  model={job['model_version']}  mean dice={_fmt(agg.get('mean_dice'), '.3f')}"
            f" over {agg.get('labelled_studies', 0)} labelled"
            f"  time={_fmt(job['timings'].get('total_seconds'))}s",
        ]
    )


def jobs_table(page: dict[str, Any]) -> str:
    """A plain-text table of a page of jobs (``GET /v1/jobs``), newest first."""
    rows = [
        (
            str(j["id"]),
            j.get("name") or "-",
            j["status"],
            f"{round(100 * j['progress'])} %",
            str(j["total"]),
            _fmt(j.get("model_version")),
            j["timings"]["created_at"][:19].replace("T", " "),
        )
        for j in page["items"]
    ]
    header = ("job", "name", "status", "progress", "studies", "model", "created (UTC)")
    return format_table(header, rows)


def biomarker_table(job: dict[str, Any]) -> str:
    """A plain-text table of each succeeded study's MIP biomarkers (docs/BIOMARKERS.md)."""
    header = ("study", "file", "tumor px", "tumor cm2", "lesions", "sDmax px", "sDmax cm",
              "sDmax/height", "body px")  # fmt: skip
    rows = []
    for s in job["studies"]:
        b = s.get("biomarkers")
        if not b:
            continue
        height, width = b["body_height_px"], b["body_width_px"]
        body = None if height is None else f"{height}x{width}"
        rows.append(
            (
                str(s["id"]),
                s["filename"],
                _fmt(b["tumor_area_px"]),
                _fmt(b["tumor_area_cm2"], ".1f"),
                _fmt(b["lesion_count"]),
                _fmt(b["sdmax_px"], ".1f"),
                _fmt(b["sdmax_cm"], ".1f"),
                _fmt(b["sdmax_per_height"], ".3f"),
                _fmt(body),
            )
        )
    return format_table(header, rows)


def untrained_banner(job: dict[str, Any]) -> str | None:
    """A loud banner when the job's model is untrained, else None."""
    if not job.get("warning"):
        return None
    bar = "!" * 78
    return f"\n{bar}\n!!! WARNING: {job['warning']}\n{bar}\n"


def exit_code(job: dict[str, Any]) -> int:
    """0 when every study succeeded, 1 otherwise."""
    return 0 if job["status"] == "succeeded" else 1
