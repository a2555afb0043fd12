"""Storing a chunk's results: one upsert per study (the worker's earlier way) against one
statement per chunk (`db.repositories.studies.upsert_results`), in one run, on a fresh
SQLite file and, when reachable, a throwaway PostgreSQL database.

Each chunk is one transaction, as in the worker: the studies of a job are marked
succeeded and their results (a 2 KB mask and the metrics) written, then committed.

Usage: .venv/bin/python -m bench.store [--n 256] [--chunk 32] [--pg URL] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from db.migrate import upgrade_to_head
from db.models import METRIC_FIELDS, StudyStatus
from db.repositories import jobs as jobs_repo
from db.repositories import studies as studies_repo
from db.session import dispose_engines, session_scope
from tests.temporary_database import temporary_database

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

Write = Callable[[Session, Sequence[dict[str, Any]]], None]


def row_by_row(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    for row in rows:
        studies_repo.upsert_results(session, [row])


def one_statement(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    studies_repo.upsert_results(session, rows)


def ms_per_study(url: str, write: Write, n: int, chunk: int) -> float:
    """Create a job of n studies, then store their results chunk by chunk."""
    with session_scope(url) as session:
        job = jobs_repo.create_job(
            session, "bench", [jobs_repo.NewStudy(f"s{i}.png", b"png") for i in range(n)]
        )
        ids = [s.id for s in job.studies]
    start = time.perf_counter()
    for k in range(0, n, chunk):
        with session_scope(url) as session:
            rows = []
            for study in studies_repo.load_studies(session, ids[k : k + chunk]):
                study.status = StudyStatus.SUCCEEDED
                row = {"study_id": study.id, "model_version": "bench", "mask_png": os.urandom(2000)}
                rows.append(
                    {**row, "height": 489, "width": 400, **dict.fromkeys(METRIC_FIELDS, 0.5)}
                )
            write(session, rows)
    return (time.perf_counter() - start) / n * 1000


def backend(name: str, url: str, n: int, chunk: int) -> dict[str, Any]:
    before = ms_per_study(url, row_by_row, n, chunk)
    after = ms_per_study(url, one_statement, n, chunk)
    return {
        "backend": name,
        "row_by_row_ms": before,
        "one_statement_ms": after,
        "ratio": before / after,
    }


def run(n: int = 256, chunk: int = 32, pg_url: str | None = PG_URL) -> list[dict[str, Any]]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade_to_head(url)
        out.append(backend("sqlite", url, n, chunk))
        dispose_engines()
    if pg_url:
        with ExitStack() as stack:
            try:
                url, _, _ = stack.enter_context(temporary_database(pg_url, "bench_store"))
            except Exception as exc:  # no PostgreSQL here: SQLite alone
                print(f"PostgreSQL skipped: {type(exc).__name__}: {exc}")
            else:
                out.append(backend("postgresql", url, n, chunk))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=32)
    parser.add_argument("--pg", default=PG_URL, help="PostgreSQL admin URL ('' to skip)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = run(args.n, args.chunk, args.pg or None)
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{args.n} studies, chunks of {args.chunk}, one transaction per chunk")
    print("| backend | row by row ms/study | one statement ms/study | ratio |\n|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['backend']} | {r['row_by_row_ms']:.2f} | {r['one_statement_ms']:.2f} | "
            f"{r['ratio']:.1f}x |"
        )


if __name__ == "__main__":
    main()
