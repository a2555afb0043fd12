"""Readiness checks: database, broker and model artifact reachable."""

from __future__ import annotations

import logging

import redis
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from config.settings import Settings
from core.current_model import current_model
from core.dispatch import Dispatcher
from model.manifest import ArtifactError

logger = logging.getLogger(__name__)


def check_database(session: Session) -> str:
    """'ok' or the error."""
    try:
        session.execute(text("SELECT 1"))
        return "ok"
    except Exception as exc:
        return f"error: {type(exc).__name__}: {exc}"


def check_broker(dispatcher: Dispatcher) -> str:
    """'ok' when the broker answers PING within 2 s, else the error."""
    try:
        dispatcher.ping()
        return "ok"
    except redis.RedisError as exc:
        return f"error: {type(exc).__name__}: {exc}"


def check_model(session: Session, settings: Settings) -> str:
    """'ok: <where>' when the artifact workers will load has a valid manifest, else the error."""
    try:
        return f"ok: {current_model(session, settings).path}"
    except (ArtifactError, SQLAlchemyError) as exc:
        return f"error: {type(exc).__name__}: {exc}"


def readiness(session: Session, settings: Settings, dispatcher: Dispatcher) -> dict[str, str]:
    """Every check's result by name."""
    return {
        "database": check_database(session),
        "broker": check_broker(dispatcher),
        "model": check_model(session, settings),
    }
