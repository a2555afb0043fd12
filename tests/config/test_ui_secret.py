"""The web viewer's signing secret: required in production, never weak."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from api.services.ui_session import ui_secret
from config.settings import Settings

STRONG = "9f2c7e41a0b84d6e8c3f5a1b7d9e2c4f"


def test_production_refuses_a_missing_secret() -> None:
    with pytest.raises(ValidationError, match="TUMORSEG_UI_SECRET must be set in production"):
        Settings(environment="production")


@pytest.mark.parametrize("weak", ["changeme", "x" * 40, "short-but-varied-123"])
def test_a_weak_secret_is_refused_in_any_environment(weak: str) -> None:
    with pytest.raises(ValidationError, match="at least 32 varied characters"):
        Settings(ui_secret=SecretStr(weak))


def test_production_uses_the_configured_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUMORSEG_ENVIRONMENT", "production")
    monkeypatch.setenv("TUMORSEG_UI_SECRET", STRONG)
    settings = Settings()
    assert ui_secret(settings) == STRONG.encode()
    assert STRONG not in repr(settings)  # a SecretStr: not printed in logs or errors


def test_development_generates_a_random_secret_per_process() -> None:
    settings = Settings()
    first, second = ui_secret(settings), ui_secret(settings)
    assert len(first) == 32
    assert first != second
