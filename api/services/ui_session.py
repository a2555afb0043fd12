"""Web-viewer sign-in: HMAC-signed session cookies and form (CSRF) tokens.

Signing in with an API key sets a cookie ``<key id>.<expiry>.<nonce>.<signature>``:
it names the key row, never holds the key, and is signed with ``TUMORSEG_UI_SECRET``
(random per process in development). Each request re-reads the key row, so revoking
the key ends its web sessions too. Forms carry a token derived from the session (or,
on the login form, from a random pre-session cookie), checked in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from sqlalchemy.orm import Session

from api.services.auth import Principal, authenticate
from config.settings import Settings
from db.models import ApiKey

SESSION_COOKIE = "tumorseg_session"
LOGIN_COOKIE = "tumorseg_login"


class LoginRequired(Exception):
    """The request has no valid web session; the app redirects it to the sign-in page."""

    def __init__(self, next_path: str = "/ui") -> None:
        super().__init__("sign in required")
        self.next_path = next_path


@dataclass(frozen=True)
class UiSession:
    """A verified web session: its principal and its raw cookie value (for form tokens)."""

    principal: Principal
    token: str


def ui_secret(settings: Settings) -> bytes:
    """The signing key: the configured secret, or a fresh random one (development only).

    Args:
        settings: The app's settings (production refuses a missing secret at start-up).

    Returns:
        Key bytes for HMAC-SHA256.
    """
    if settings.ui_secret is not None:
        return settings.ui_secret.get_secret_value().encode("utf-8")
    return secrets.token_bytes(32)


def _sign(secret: bytes, message: str) -> str:
    digest = hmac.new(secret, message.encode("utf-8"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sign_in(session: Session, settings: Settings, secret: bytes, key: str) -> str:
    """Check an API key and return the session cookie value for it.

    Args:
        session: The request's unit of work.
        settings: The app's settings (session lifetime).
        secret: The signing key.
        key: The API key typed into the sign-in form.

    Returns:
        The signed cookie value.

    Raises:
        ServiceError: 401 when the key is missing, unknown or revoked.
    """
    principal = authenticate(session, key.strip() or None)
    expires = int(time.time()) + settings.ui_session_seconds
    payload = f"{principal.key_id}.{expires}.{secrets.token_urlsafe(12)}"
    return f"{payload}.{_sign(secret, payload)}"


def verify(session: Session, secret: bytes, token: str | None, next_path: str) -> UiSession:
    """The web session of a cookie value.

    Args:
        session: The request's unit of work.
        secret: The signing key.
        token: The cookie value, None without a cookie.
        next_path: Where to come back to after signing in.

    Returns:
        The verified session.

    Raises:
        LoginRequired: No cookie, a bad signature, an expired session, or a key that no
            longer exists or was revoked.
    """
    parts = (token or "").split(".")
    if len(parts) != 4 or not hmac.compare_digest(_sign(secret, ".".join(parts[:3])), parts[3]):
        raise LoginRequired(next_path)
    key_id, expires = parts[0], parts[1]
    if not (key_id.isdigit() and expires.isdigit()) or int(expires) < time.time():
        raise LoginRequired(next_path)
    row = session.get(ApiKey, int(key_id))
    if row is None or row.revoked_at is not None:
        raise LoginRequired(next_path)
    principal = Principal(row.id, row.name, row.tenant, row.is_admin)
    return UiSession(principal, token or "")


def new_login_nonce() -> str:
    """A random value for the pre-session cookie that the login form's token is bound to."""
    return secrets.token_urlsafe(24)


def form_token(secret: bytes, bound_to: str) -> str:
    """The CSRF token of forms on a page, bound to the session (or login) cookie value."""
    return _sign(secret, f"form:{bound_to}")


def check_form_token(secret: bytes, bound_to: str | None, token: str | None) -> bool:
    """Whether a submitted form token matches the cookie it is bound to."""
    if not bound_to or not token:
        return False
    return hmac.compare_digest(form_token(secret, bound_to), token)


def safe_next(path: str | None) -> str:
    """A same-site path under ``/ui`` to go to after signing in (``/ui`` otherwise)."""
    if path and path.startswith("/ui") and not path.startswith("//") and "\\" not in path:
        return path
    return "/ui"
