"""One predictor per worker process, loaded lazily and reloaded when the current model
changes (a promotion).

The parent Celery process never calls into here, so torch (and CUDA) are first touched
in the forked child that runs the task.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from core.current_model import CurrentModel

if TYPE_CHECKING:
    from model.predictor import Predictor

logger = logging.getLogger(__name__)


class PredictorCache:
    """Holds this process's predictor and the choice it was loaded for."""

    def __init__(
        self,
        device: str,
        batch_size: int,
        threads: int = 0,
        members: int = 0,
        runtime: str = "torch",
        cache_dir: Path | None = None,
    ) -> None:
        """Remember how to load; nothing is loaded until the first `get`.

        Args:
            device: 'auto', 'cpu', 'cuda', 'cuda:N'.
            batch_size: Images per forward pass; 0 = the measured best for the device.
            threads: torch threads for this process; 0 leaves torch's default.
            members: An ensemble's members to run (0 = all, 1 = fast).
            runtime: 'auto', 'torch' or 'openvino' (`model/runtime.py`).
            cache_dir: Where OpenVINO keeps converted members.
        """
        self._device = device
        self._batch_size = batch_size
        self._threads = threads
        self._members = members
        self._runtime, self._cache_dir = runtime, cache_dir
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._model: CurrentModel | None = None
        self._predictor: Predictor | None = None

    def get(self, model: CurrentModel) -> Predictor:
        """Return the predictor for ``model``, loading it when the current model changed.

        Args:
            model: The artifact the current task must use.

        Returns:
            A ready predictor.
        """
        with self._lock:
            stale = self._pid != os.getpid() or self._model != model
            if self._predictor is None or stale:
                import torch

                from model.manifest import read_manifest
                from model.predictor import Predictor  # lazy: keep torch out of the parent

                if self._threads:
                    torch.set_num_threads(self._threads)
                old = self._predictor.version if self._predictor is not None else None
                self._predictor = Predictor.from_artifact(
                    model.path,
                    device=self._device,
                    batch_size=self._batch_size,
                    members=self._members,
                    runtime=self._runtime,
                    cache_dir=self._cache_dir,
                )
                self._model, self._pid = model, os.getpid()
                logger.info(
                    "loaded model %s (trained=%s, %d of %d members, batch %d, %s) from %s; was %s",
                    self._predictor.version,
                    self._predictor.trained,
                    self._predictor.n_members,
                    read_manifest(model.path).n_members,
                    self._predictor.inference.batch_size,
                    self._predictor.inference.runtime,
                    model.path,
                    old,
                )
            return self._predictor
