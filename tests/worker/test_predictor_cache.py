"""The worker's predictor with an ensemble artifact: the members it runs, the version
its results record."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from sqlalchemy import select

from config.settings import Settings, get_settings
from core.current_model import CurrentModel
from db.models import Result
from db.repositories import jobs as jobs_repo
from db.repositories import model_versions as models_repo
from db.session import session_scope
from model.artifact import save_ensemble
from model.manifest import Manifest
from model.network import build_network
from tests.conftest import patient_files, queued_study_ids
from tests.model.conftest import TINY_ARCH
from worker.predictor_cache import PredictorCache
from worker.segmentation import SegmentationService


@pytest.fixture
def ensemble(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    manifest = Manifest(version="pending", trained=False, architecture=dict(TINY_ARCH))
    return save_ensemble([build_network(TINY_ARCH) for _ in range(3)], manifest, tmp_path)


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_the_service_runs_the_setting_s_members(ensemble: Path, settings: Settings) -> None:
    choice = CurrentModel(ensemble, ensemble.name, promoted=True)
    assert PredictorCache("cpu", 1).get(choice).n_members == 3  # 0: all of them
    fast = SegmentationService(settings.model_copy(update={"model_members": 1})).cache.get(choice)
    assert fast.n_members == 1
    assert fast.version == ensemble.name
    assert PredictorCache("cpu", 1, members=2).get(choice).n_members == 2


def test_results_record_the_ensemble_version(ensemble: Path, settings: Settings) -> None:
    url = settings.sqlalchemy_url
    manifest = json.loads((ensemble / "manifest.json").read_text())
    with session_scope(url) as session:
        models_repo.register(session, ensemble.name, str(ensemble), manifest, trained=False)
        models_repo.promote(session, ensemble.name)
        img, label = patient_files(1)[0]
        job = jobs_repo.create_job(
            session,
            "test",
            [jobs_repo.NewStudy(img.name, img.read_bytes(), label.name, label.read_bytes())],
        )
        ids = queued_study_ids(session, job.id)
    service = SegmentationService(settings, PredictorCache("cpu", 1, members=1))
    try:
        report = service.run_chunk(ids)
        assert report.succeeded == ids
        assert report.model_version == ensemble.name
        with session_scope(url) as session:
            versions = session.scalars(
                select(Result.model_version).where(Result.study_id.in_(ids))
            ).all()
            assert versions == [ensemble.name]
    finally:
        with session_scope(url) as session:
            row = models_repo.get_version(session, ensemble.name)
            assert row is not None
            row.promoted = False
