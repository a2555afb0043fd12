"""``tumorseg stop``: stop the embedded Redis server of this machine's service.

The API and the workers started without ``TUMORSEG_REDIS_URL`` share an embedded
``redis-server`` under ``TUMORSEG_VAR_DIR``; it ends by itself when the last of them
exits. This stops it when one of them could not sign out (it was killed), or, with
``--force``, while they still run.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's options."""
    parser.add_argument(
        "--force",
        action="store_true",
        help="stop it even while processes that use it are running (they lose their broker)",
    )


def run(args: argparse.Namespace) -> int:
    """Stop the server; 0 when stopped or none was running, 1 when processes still use it."""
    import sys

    from config.settings import get_settings
    from core.broker import stop_embedded_server

    var_dir = get_settings().var_dir.resolve()
    report = stop_embedded_server(var_dir, force=args.force)
    if not report.found:
        print(f"no embedded redis-server is running under {var_dir}")
        return 0
    users = ", ".join(str(pid) for pid in report.users)
    if not report.stopped:
        print(
            f"tumorseg stop: the embedded redis-server under {var_dir} is still used by "
            f"process {users}; stop them (it then ends with the last), or use --force",
            file=sys.stderr,
        )
        return 1
    forced = f" (process {users} lost its broker)" if report.users else ""
    print(f"stopped the embedded redis-server under {var_dir}{forced}")
    return 0
