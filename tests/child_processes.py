"""Processes the tests start (workers, API servers, Redis, Orthanc) die with the test run.

A test run that crashes or is killed never reaches its fixtures' clean-up, and a worker it
leaves behind goes on taking the next run's tasks from the same Redis database: that next
run then fails with studies that stay queued. On Linux the child is started through
`setpriv --pdeathsig TERM`, so the kernel sends it SIGTERM when the test process dies;
elsewhere, or without util-linux's `setpriv`, the command runs as it is.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence

SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None


def tied_to_tests(argv: Sequence[str]) -> list[str]:
    """`argv`, run so that it gets SIGTERM when the test process dies."""
    if SETPRIV is None:
        return list(argv)
    return [SETPRIV, "--pdeathsig", "TERM", "--", *argv]
