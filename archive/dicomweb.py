"""One DICOMweb service (a PACS): QIDO-RS searches, WADO-RS retrieval, STOW-RS stores.

A thin layer over ``dicomweb-client`` that applies the endpoint's settings (auth none,
basic or bearer; TLS verification or a CA bundle; a timeout per request, no retries
within a call) and turns every
failure of the service (refused connection, timeout, an HTTP error, a malformed answer)
into :class:`PacsError`, so callers have one thing to catch: a PACS that is down delays
the work, it never fails a study.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from typing import Any

import requests
from pydicom.dataset import Dataset

from config.settings import PacsEndpoint

logger = logging.getLogger(__name__)

#: Study-level attributes asked for in the study search (beyond the defaults).
_STUDY_FIELDS = ("StudyDate", "ModalitiesInStudy", "PatientID", "AccessionNumber")
#: Series-level attributes asked for in the series search.
_SERIES_FIELDS = ("Modality", "SeriesDescription", "NumberOfSeriesRelatedInstances")
#: Results asked for per search request; a service may answer fewer (its own cap).
PAGE = 1000


class PacsError(RuntimeError):
    """The PACS could not be reached, or answered with an error; the message says which."""


class DicomwebArchive:
    """A DICOMweb service configured by a :class:`PacsEndpoint`.

    Args:
        endpoint: Its URL, auth, TLS and timeout settings.
    """

    def __init__(self, endpoint: PacsEndpoint) -> None:
        from dicomweb_client.api import DICOMwebClient

        self.endpoint = endpoint
        session = requests.Session()
        if endpoint.ca_bundle is not None:
            session.verify = str(endpoint.ca_bundle)
        else:
            session.verify = endpoint.verify_tls
        headers: dict[str, str] = {}
        if endpoint.auth == "basic" and endpoint.username and endpoint.password:
            session.auth = (endpoint.username, endpoint.password.get_secret_value())
        elif endpoint.auth == "bearer" and endpoint.token:
            headers["Authorization"] = f"Bearer {endpoint.token.get_secret_value()}"
        self._session = session
        self._client = DICOMwebClient(
            endpoint.url.rstrip("/"), session=session, headers=headers, timeout=endpoint.timeout
        )
        # no retries inside a request (the client's default waits 30 s on a refused
        # connection): a failed scan or export is tried again by the next scan or the
        # outbox, without holding a worker
        self._client.set_http_retry_params(retry=False)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._session.close()

    @contextmanager
    def _calling(self, what: str) -> Iterator[None]:
        try:
            yield
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
            raise PacsError(
                f"PACS {self.endpoint.name}: {what} failed: {type(exc).__name__}: {exc}"
            ) from exc

    # -- QIDO-RS ---------------------------------------------------------------------
    def pet_studies(self, start: date, end: date) -> list[Dataset]:
        """Studies with a PET series (``ModalitiesInStudy=PT``) whose StudyDate lies in
        ``[start, end]``."""
        window = f"{start:%Y%m%d}-{end:%Y%m%d}"
        with self._calling("the study search"):
            found = _paged(
                lambda offset: self._client.search_for_studies(
                    search_filters={"ModalitiesInStudy": "PT", "StudyDate": window},
                    fields=list(_STUDY_FIELDS),
                    limit=PAGE,
                    offset=offset,
                )
            )
            return [Dataset.from_json(item) for item in found]

    def series(self, study_uid: str, modality: str | None = "PT") -> list[Dataset]:
        """The study's series (of one modality), with their instance counts."""
        filters = {"Modality": modality} if modality else None
        with self._calling(f"the series search of study {study_uid}"):
            found = _paged(
                lambda offset: self._client.search_for_series(
                    study_uid,
                    search_filters=filters,
                    fields=list(_SERIES_FIELDS),
                    limit=PAGE,
                    offset=offset,
                )
            )
            return [Dataset.from_json(item) for item in found]

    def instance_uids(self, study_uid: str, series_uid: str) -> list[str]:
        """The SOPInstanceUIDs of a series (one cheap search, no metadata)."""
        with self._calling(f"the instance search of series {series_uid}"):
            found = _paged(
                lambda offset: self._client.search_for_instances(
                    study_uid, series_uid, fields=["SOPInstanceUID"], limit=PAGE, offset=offset
                )
            )
            return sorted({str(Dataset.from_json(item).SOPInstanceUID) for item in found})

    # -- WADO-RS ---------------------------------------------------------------------
    def series_metadata(self, study_uid: str, series_uid: str) -> list[Dataset]:
        """Every instance's header of a series (no pixel data)."""
        with self._calling(f"the metadata of series {series_uid}"):
            found = self._client.retrieve_series_metadata(study_uid, series_uid)
            return [Dataset.from_json(_without_bulk_data(item)) for item in found]

    def series_instances(self, study_uid: str, series_uid: str) -> list[Dataset]:
        """Every instance of a series, pixel data included."""
        with self._calling(f"the instances of series {series_uid}"):
            return list(self._client.retrieve_series(study_uid, series_uid))

    # -- STOW-RS ---------------------------------------------------------------------
    def store(self, datasets: Sequence[Dataset], study_uid: str) -> None:
        """Store instances into a study.

        Raises:
            PacsError: The request failed, or the answer lists an instance as failed.
        """
        for ds in datasets:  # a PS3.10 file each: preamble and "DICM" written
            if getattr(ds, "preamble", None) is None:
                ds.preamble = b"\0" * 128
        with self._calling(f"storing {len(datasets)} instances into study {study_uid}"):
            answer = self._client.store_instances(list(datasets), study_uid)
        failed = getattr(answer, "FailedSOPSequence", None) or []
        if failed:
            reasons = sorted({str(getattr(item, "FailureReason", "?")) for item in failed})
            raise PacsError(
                f"PACS {self.endpoint.name} refused {len(failed)} instances "
                f"(FailureReason {', '.join(reasons)})"
            )


def _paged(search: Callable[[int], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every result of a QIDO search, page by page (``limit`` and ``offset``).

    Stops at a short or empty page, and at a page that repeats the previous one (a
    service that ignores ``offset``), so it never loops.
    """
    found: list[dict[str, Any]] = []
    previous: list[dict[str, Any]] | None = None
    while True:
        page = search(len(found))
        if not page or page == previous:
            return found
        found.extend(page)
        if len(page) < PAGE:
            return found
        previous = page


def _without_bulk_data(item: dict[str, Any]) -> dict[str, Any]:
    """A DICOM JSON instance without the bulk-data references (pixel data) that a
    metadata answer carries instead of values."""
    return {
        tag: element
        for tag, element in item.items()
        if not (isinstance(element, dict) and "BulkDataURI" in element)
    }
