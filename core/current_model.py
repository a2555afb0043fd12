"""Which model artifact is current: the promoted version, else the configured artifact,
else the released one. Workers load it; the API's readiness and the archive scan name it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from config.settings import Settings
from db.repositories import model_versions as models_repo
from model.manifest import artifact_dir, read_manifest


@dataclass(frozen=True)
class CurrentModel:
    """The artifact that workers use now.

    Attributes:
        path: The artifact directory.
        version: Its version: the promoted row's, else its manifest's.
        promoted: Whether a version is promoted in the database.
    """

    path: Path
    version: str
    promoted: bool


def current_model(session: Session, settings: Settings) -> CurrentModel:
    """The current artifact; its manifest is read (and checked) unless it is promoted.

    Raises:
        model.manifest.ArtifactError: The configured or released artifact has no valid
            manifest, or no artifact is released.
    """
    promoted = models_repo.get_promoted(session)
    if promoted is not None:
        return CurrentModel(Path(promoted.path), promoted.version, promoted=True)
    path = artifact_dir(settings.artifact_dir)
    return CurrentModel(path, read_manifest(path).version, promoted=False)
