"""Thin Celery tasks of the PACS export: one export by its outbox id, and the outbox pass.

The work is ``archive/pacs_export.py``'s; both tasks are idempotent (an export already
sent is left alone, and a retried export stores only what the PACS lacks, under the
same UIDs).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, Task, shared_task

from archive.pacs_export import export_one, outbox_pass
from config.settings import get_settings
from core.celery_app import PACS_EXPORT_TASK, PACS_OUTBOX_TASK
from core.dispatch import Dispatcher

_dispatcher: tuple[int, Dispatcher] | None = None


def _get_dispatcher(app: Celery) -> Dispatcher:
    """This process's dispatcher on the worker's app (the outbox pass sends through it)."""
    global _dispatcher
    if _dispatcher is None or _dispatcher[0] != os.getpid():
        _dispatcher = (os.getpid(), Dispatcher(get_settings(), app))
    return _dispatcher[1]


# Celery has no type hints: to mypy its task decorator makes the functions untyped.
@shared_task(name=PACS_EXPORT_TASK, bind=True)  # type: ignore[untyped-decorator]
def pacs_export(self: Task, export_id: int) -> dict[str, Any]:
    """Send one export's missing objects to its PACS; a failure waits in the outbox."""
    return export_one(get_settings(), export_id).as_dict()


@shared_task(name=PACS_OUTBOX_TASK, bind=True)  # type: ignore[untyped-decorator]
def pacs_outbox(self: Task) -> dict[str, Any]:
    """One outbox pass: exports for finished PACS studies, and the due ones sent (beat)."""
    return outbox_pass(get_settings(), _get_dispatcher(self.app)).as_dict()
