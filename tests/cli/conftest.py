"""CLI fixtures: the real API served over HTTP on the session's database and Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from api.app import create_app
from cli.stack import free_port
from config.settings import Settings
from tests.conftest import create_api_key


@pytest.fixture(scope="module")
def live_api(settings: Settings) -> Iterator[tuple[str, str]]:
    """(base URL, client key) of the real API served by uvicorn on a free port, on queues
    that no worker consumes (its jobs stay queued)."""
    app_settings = settings.model_copy(
        update={
            "interactive_queue": "tumorseg.test.cli.unconsumed",
            "nightly_queue": "tumorseg.test.cli.unconsumed.nightly",
        }
    )
    port = free_port()
    config = uvicorn.Config(
        create_app(app_settings), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "uvicorn did not start"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    key = create_api_key(settings.sqlalchemy_url, "cli-tests", tenant="cli")
    yield f"http://127.0.0.1:{port}", key
    server.should_exit = True
    thread.join(timeout=15)
