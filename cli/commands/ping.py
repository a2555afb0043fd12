"""``tumorseg ping api|worker|beat``: exit 0 when the target answers (container health checks)."""

from __future__ import annotations

import argparse
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from config.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's options."""
    parser.add_argument("target", choices=["api", "worker", "beat"])
    parser.add_argument("--url", default=None, help="API base URL (TUMORSEG_API_URL)")
    parser.add_argument("--timeout", type=float, default=5.0)


def run(args: argparse.Namespace) -> int:
    """Probe the target; 0 when healthy, 1 otherwise."""
    from config.settings import get_settings

    settings = get_settings()
    if args.target == "api":
        import httpx

        url = (args.url or settings.api_url).rstrip("/")
        try:
            ok = httpx.get(f"{url}/readyz", timeout=args.timeout).status_code == 200
        except httpx.HTTPError:
            ok = False
    elif args.target == "beat":
        ok = _beat_alive(settings, args.timeout)
    else:
        from core.celery_app import celery_app

        app = celery_app(settings)
        replies = app.control.ping(
            destination=[f"tumorseg@{socket.gethostname()}"], timeout=args.timeout
        )
        ok = bool(replies)
    print("ok" if ok else "not ok")
    return 0 if ok else 1


def _beat_alive(settings: Settings, timeout: float) -> bool:
    """Beat has written its schedule file and the broker it sends to answers."""
    import redis

    from core.broker import broker_url, redis_py_url

    if not any(settings.var_dir.glob("celerybeat-schedule*")):
        return False
    client = redis.Redis.from_url(redis_py_url(broker_url(settings)), socket_timeout=timeout)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()
