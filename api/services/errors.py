"""The one exception type services raise; the app turns it into a JSON error response."""

from __future__ import annotations


class ServiceError(Exception):
    """A request the service refuses, with the HTTP status and a human-readable reason."""

    def __init__(
        self, status_code: int, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers or {}
