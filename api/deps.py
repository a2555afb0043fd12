"""FastAPI dependencies: settings, the per-request unit of work, the queue producer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from api.services.queue import QueueProducer, commit_and_dispatch, discard_pending
from config.settings import Settings
from db.session import get_session_factory


def get_app_settings(request: Request) -> Settings:
    """The settings the app was built with."""
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    """One session per request: commit (then enqueue) on success, roll back on error."""
    settings: Settings = request.app.state.settings
    session = get_session_factory(settings.sqlalchemy_url)()
    try:
        yield session
        commit_and_dispatch(session)
    except BaseException:
        discard_pending(session)
        session.rollback()
        raise
    finally:
        session.close()


def get_producer(request: Request) -> QueueProducer:
    """The app's Celery producer."""
    producer: QueueProducer = request.app.state.producer
    return producer


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
# scope="function": the commit (and the enqueue after it) happens before the response
# is sent, so a client never sees a job id that is not yet in the database.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
ProducerDep = Annotated[QueueProducer, Depends(get_producer)]
