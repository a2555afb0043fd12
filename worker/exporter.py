"""A worker node's Prometheus exporter: one HTTP server in the main process for every
pool process of the node.

The pool is prefork, so each process of the node (the main one, which runs the recovery
passes, and every pool child, which runs the chunks) counts in files of its own under a
folder of the node: prometheus_client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``.
The exporter adds them up at each scrape, so counts survive a child that is replaced
(``worker_max_tasks_per_child``) and keep growing until the node stops. Each start gets a
fresh folder, removed at shutdown; a child that exits is marked dead.

prometheus_client chooses that mode when it is first imported, so :func:`start` must run
before anything imports it (``worker.metrics``, through ``worker.tasks`` and
``worker.reaper``); ``tumorseg worker`` calls it first, and it refuses to run later.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIServer

from celery import signals

from config.settings import Settings

logger = logging.getLogger(__name__)

#: The variable through which prometheus_client's multiprocess mode finds its folder.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass
class Exporter:
    """The running exporter of a node: its folder, HTTP server and thread."""

    directory: Path
    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self.server.server_port)

    def stop(self) -> None:
        """Stop serving and remove the folder."""
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self.directory, ignore_errors=True)


def start(settings: Settings) -> Exporter | None:
    """Serve ``GET /metrics`` of this node on ``worker_metrics_port`` (nothing when 0).

    Call it in the worker's main process before the pool starts and before
    ``prometheus_client`` is imported (see the module's notes).

    Args:
        settings: ``worker_metrics_port`` and ``worker_metrics_host``.

    Returns:
        The exporter, stopped at the worker's shutdown; None when the port is 0.

    Raises:
        RuntimeError: ``prometheus_client`` was imported already.
        OSError: The port cannot be bound.
    """
    if not settings.worker_metrics_port:
        return None
    if "prometheus_client" in sys.modules:
        raise RuntimeError(
            "prometheus_client was imported before the worker's exporter set up its "
            "multiprocess folder: the pool's metrics would not be exported"
        )
    directory = Path(tempfile.mkdtemp(prefix="tumorseg-worker-metrics-"))
    os.environ[MULTIPROC_ENV] = str(directory)  # read by prometheus_client, inherited by the pool

    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

    registry = CollectorRegistry()
    # prometheus_client's multiprocess module has no annotations
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    try:
        server, thread = start_http_server(
            settings.worker_metrics_port, settings.worker_metrics_host, registry=registry
        )
    except OSError:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    exporter = Exporter(directory, server, thread)

    def child_exits(pid: int, **_: Any) -> None:  # in the pool child, just before it exits
        mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]

    def node_stops(**_: Any) -> None:
        exporter.stop()

    signals.worker_process_shutdown.connect(child_exits, weak=False)
    signals.worker_shutdown.connect(node_stops, weak=False)
    logger.info(
        "Prometheus exporter on http://%s:%d/metrics (folder %s)",
        settings.worker_metrics_host,
        exporter.port,
        directory,
    )
    return exporter
