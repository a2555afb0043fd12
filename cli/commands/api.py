"""``tumorseg api``: serve the HTTP API with uvicorn."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's options."""
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")


def run(args: argparse.Namespace) -> int:
    """Upgrade the database and serve until stopped."""
    import uvicorn

    from api.app import create_app
    from config.settings import get_settings

    settings = get_settings()
    app = create_app(settings, public_url=public_url(args.host, args.port))
    uvicorn.run(app, host=args.host, port=args.port, log_level=settings.log_level.lower())
    return 0


def public_url(host: str, port: int) -> str:
    """The address to open for an API bound to ``host``: this machine's for the wildcard
    addresses, IPv6 literals in brackets."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"
