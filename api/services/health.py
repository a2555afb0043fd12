"""Readiness checks: database, broker and model artifact reachable."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import redis
from sqlalchemy import text
from sqlalchemy.orm import Session

from config.embedded import redis_py_url
from config.settings import Settings
from db.repositories import model_versions as models_repo

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
RELEASED_NAME = "RELEASED"


def check_database(session: Session) -> str:
    """'ok' or the error."""
    try:
        session.execute(text("SELECT 1"))
        return "ok"
    except Exception as exc:
        return f"error: {type(exc).__name__}: {exc}"


def check_broker(broker_url: str) -> str:
    """'ok' when the broker answers PING within 2 s, else the error."""
    try:
        client = redis.Redis.from_url(
            redis_py_url(broker_url), socket_timeout=2, socket_connect_timeout=2
        )
        try:
            client.ping()
        finally:
            client.close()
        return "ok"
    except Exception as exc:
        return f"error: {type(exc).__name__}: {exc}"


def bundled_artifact_dir() -> Path | None:
    """The released bundled artifact (``model/artifacts/RELEASED`` names it).

    Found on disk without importing ``model`` (which would import torch).
    """
    spec = importlib.util.find_spec("model")
    if spec is None or not spec.submodule_search_locations:
        return None
    artifacts = Path(next(iter(spec.submodule_search_locations))) / "artifacts"
    released = artifacts / RELEASED_NAME
    if not released.is_file():
        return None
    return artifacts / released.read_text().strip()


def check_model(session: Session, settings: Settings) -> str:
    """'ok: <where>' when the artifact workers will load has a manifest, else the error."""
    try:
        promoted = models_repo.get_promoted(session)
    except Exception as exc:
        return f"error: {type(exc).__name__}: {exc}"
    if promoted is not None:
        where = Path(promoted.path)
    elif settings.artifact_dir is not None:
        where = settings.artifact_dir
    else:
        bundled = bundled_artifact_dir()
        if bundled is None:
            return "error: no released model artifact (model/artifacts/RELEASED)"
        where = bundled
    manifest = where / MANIFEST_NAME if where.is_dir() else where
    if not manifest.exists():
        return f"error: no model artifact at {where}"
    return f"ok: {where}"


def readiness(session: Session, settings: Settings, broker_url: str) -> dict[str, str]:
    """Every check's result by name."""
    return {
        "database": check_database(session),
        "broker": check_broker(broker_url),
        "model": check_model(session, settings),
    }
