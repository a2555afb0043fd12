"""docker-compose.yml read back: services, CLI commands, real settings, health checks,
metrics ports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cli.main import COMMANDS, build_parser
from config.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_compose_has_the_four_services_with_health_checks() -> None:
    services = _compose()["services"]
    assert {"redis", "postgres", "api", "worker"} <= set(services)
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"


def test_service_commands_exist_in_the_cli() -> None:
    services = _compose()["services"]
    for name in ("api", "worker"):
        command = services[name]["command"]
        assert command[0] == "tumorseg"
        assert command[1] in COMMANDS
        build_parser(command[1]).parse_args(command[1:])  # arguments are accepted
        check = services[name]["healthcheck"]["test"]
        assert check[1] == "tumorseg"
        assert check[2] in COMMANDS
        build_parser(check[2]).parse_args(check[2:])


def test_environment_names_are_real_settings() -> None:
    services = _compose()["services"]
    fields = {f"TUMORSEG_{name.upper()}" for name in Settings.model_fields}
    seen = set()
    for name in ("api", "worker"):
        env = services[name]["environment"]
        names = {k for k in env if k.startswith("TUMORSEG_")}
        assert names <= fields, f"{name}: unknown settings {names - fields}"
        assert {"TUMORSEG_DATABASE_URL", "TUMORSEG_REDIS_URL"} <= names
        seen |= names
        Settings(**{k.removeprefix("TUMORSEG_").lower(): v for k, v in env.items()
                    if k not in {"TUMORSEG_DATABASE_URL", "TUMORSEG_REDIS_URL"}})  # fmt: skip
    assert "TUMORSEG_DEVICE" in seen


def test_redis_persists_and_worker_reserves_a_gpu() -> None:
    services = _compose()["services"]
    assert "--appendonly" in services["redis"]["command"]
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices
    assert "gpu" in devices[0]["capabilities"]
    assert services["api"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_workers_export_metrics_on_an_exposed_port() -> None:
    worker = _compose()["services"]["worker"]
    env = worker["environment"]
    settings = Settings(
        worker_metrics_port=env["TUMORSEG_WORKER_METRICS_PORT"],
        worker_metrics_host=env["TUMORSEG_WORKER_METRICS_HOST"],
    )
    assert settings.worker_metrics_port == 9100
    assert settings.worker_metrics_host == "0.0.0.0"  # reachable from the compose network
    assert str(settings.worker_metrics_port) in [str(p) for p in worker["expose"]]
    # no host port: the replicas of `--scale worker=N` would all want it
    assert "ports" not in worker
