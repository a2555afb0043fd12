"""The benchmarks still run end to end; no timing is asserted.

Each benchmark has a smoke test in the default run (the fewest studies that exercise
every path of it) and a larger run behind the ``bench`` marker, which the default run
leaves out: ``.venv/bin/pytest -m bench`` (``make bench-tests``).
"""

from __future__ import annotations

from typing import Any

import pytest

from bench import inference, pipeline, postprocessing, store
from model.manifest import read_manifest, released_artifact_dir

pytestmark = pytest.mark.skipif(
    not inference.DATA.is_dir(), reason=f"development data not found at {inference.DATA}"
)


# -- inference: the seed's path against the predictor -------------------------------
def _check_inference(result: dict[str, Any], n: int, batch_sizes: set[int]) -> None:
    assert result["n_studies"] == n
    assert result["baseline_studies_per_s"] > 0
    assert result["ours_network_studies_per_s"] > 0
    assert result["ratio"] == pytest.approx(
        result["ours_studies_per_s"] / result["baseline_studies_per_s"]
    )
    ours = [r for r in result["rows"] if r["path"].startswith("ours")]
    assert {r["batch"] for r in ours} == batch_sizes
    assert ours[0]["precision"] == "fp32"
    assert all(r["padding_waste"] >= 0 for r in ours)


def test_inference_benchmark_smoke() -> None:
    result = inference.run(n=2, batch_sizes=[2], seed_n=1, repeat=1)
    _check_inference(result, n=2, batch_sizes={2})


@pytest.mark.bench
def test_inference_benchmark_reports_ratio_agreement_and_network_rate() -> None:
    result = inference.run(n=8, batch_sizes=[1, 4], seed_n=2, repeat=2)
    _check_inference(result, n=8, batch_sizes={1, 4})
    assert result["repeat"] == 2
    assert 0.95 <= result["min_agreement_dice"] <= 1.0  # the 0.99 bar is over 16+ patients


# -- pipeline: API, Redis, worker and SQLite end to end ------------------------------
def _check_pipeline(result: dict[str, Any], n: int, chunks: int) -> None:
    assert result["job_status"] == "succeeded"
    assert result["counts"]["succeeded"] == n
    assert result["studies_per_s"] > 0
    assert result["model_studies_per_s"] > 0
    assert result["overhead"] == pytest.approx(1 - result["model_s"] / result["wall_s"])
    assert result["status_polls"] >= 1
    assert result["status_p95_ms"] >= result["status_p50_ms"]
    assert result["status_form"].startswith("status alone")
    assert result["warm_studies"] == n  # steady state: every study once through first
    # the timed job's chunk reports, read back from the worker's log (not the warm-up's)
    assert result["chunks"] == chunks
    assert result["chunk_studies"] == n
    assert set(result["chunk_phases_s"]) == {"claim", "decode", "predict", "findings", "store"}
    assert 0 < sum(result["chunk_phases_s"].values()) <= result["chunk_seconds_s"] + 0.01


def test_pipeline_benchmark_smoke() -> None:
    _check_pipeline(pipeline.run(n=2, concurrency=1, chunk_size=2, batch_size=0), n=2, chunks=1)


@pytest.mark.bench
def test_pipeline_benchmark_runs_a_job_through_the_real_stack() -> None:
    result = pipeline.run(n=8, concurrency=1, chunk_size=2, batch_size=0)
    _check_pipeline(result, n=8, chunks=4)


# -- post-processing: component removal, thresholding on the device -----------------
def _check_postprocessing(result: dict[str, Any], n: int) -> None:
    assert result["n_studies"] == n  # run() asserts equal masks on every study itself
    released = read_manifest(released_artifact_dir()).postprocessing.get("min_peak")
    assert result["min_peak"] == (released or 0.9)  # the released rule's, else 0.9
    assert result["peak_rule_ms_per_study"] > 0
    assert result["peak_rule_ratio"] == pytest.approx(
        result["peak_rule_ms_per_study"] / result["device_threshold_ms_per_study"]
    )
    assert result["min_component_px"] >= 2
    assert result["whole_image_ms_per_study"] > 0
    assert result["tumor_box_ms_per_study"] > 0
    assert result["ratio"] == pytest.approx(
        result["whole_image_ms_per_study"] / result["tumor_box_ms_per_study"]
    )
    assert result["device"] == "cpu"
    assert result["batch_size"] >= 1
    assert result["copy_out_ratio"] == pytest.approx(
        result["host_threshold_ms_per_study"] / result["device_threshold_ms_per_study"]
    )


def test_postprocessing_benchmark_smoke() -> None:
    _check_postprocessing(postprocessing.run(n=2, repeat=1), n=2)


@pytest.mark.bench
def test_postprocessing_benchmark_checks_masks_and_reports_both_costs() -> None:
    _check_postprocessing(postprocessing.run(n=16, repeat=3), n=16)


# -- store: a chunk's results row by row or in one statement -------------------------
def _check_store(results: list[dict[str, Any]]) -> None:
    assert [r["backend"] for r in results] == ["sqlite", "postgresql"]
    for r in results:
        assert r["row_by_row_ms"] > 0
        assert r["one_statement_ms"] > 0
        assert r["ratio"] == pytest.approx(r["row_by_row_ms"] / r["one_statement_ms"])


def test_store_benchmark_smoke() -> None:
    _check_store(store.run(n=4, chunk=2))


@pytest.mark.bench
def test_store_benchmark_times_both_ways_on_sqlite_and_postgresql() -> None:
    _check_store(store.run(n=128, chunk=32))


# -- host overlap: decoding and measuring beside the network -------------------------
# -- findings: what lesions and biomarkers add to measuring a study ------------------
def test_findings_benchmark_smoke() -> None:
    from bench import findings

    result = findings.run(n=2, repeat=1)
    assert result["n_studies"] == 2
    for key in ("network_ms", "findings_ms", "separately_ms", "encode_ms"):
        assert result[key] > 0
    assert result["findings_over_separately"] == pytest.approx(
        result["findings_ms"] / result["separately_ms"]
    )
    assert result["findings_over_network"] == pytest.approx(
        result["findings_ms"] / result["network_ms"]
    )


# -- ensemble: the released ensemble against a single network ------------------------
def test_ensemble_benchmark_smoke() -> None:
    from bench import ensemble
    from model.manifest import ARTIFACTS_DIR

    released = released_artifact_dir()
    single = ARTIFACTS_DIR.parent / "superseded" / "attention-unet-20261202-77e08ac5-ppa0efbc"
    result = ensemble.run(single, released, n=2, repeat=1, device="cpu", data=inference.DATA)
    assert result["n_studies"] == 2
    rows = result["rows"]
    assert [r["members"] for r in rows] == [1, read_manifest(released).n_members, 1]
    assert [r["model_version"] for r in rows[1:]] == [released.name] * 2
    assert all(r["studies_per_s"] > 0 for r in rows)
    assert rows[0]["ratio_to_single"] == 1.0
    assert rows[1]["ratio_to_single"] == pytest.approx(
        rows[1]["studies_per_s"] / rows[0]["studies_per_s"]
    )
