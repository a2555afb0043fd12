"""The install is reproducible: pyproject.toml, constraints.txt and the Dockerfile agree."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    """The normalised project name of a requirement ('psycopg[binary]>=3.1' -> 'psycopg')."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep, f"constraints.txt pins exact versions only: {line!r}"
            pins[_name(name)] = version
    return pins


def test_every_declared_dependency_but_torch_is_pinned() -> None:
    project = _pyproject()["project"]
    declared = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    pins = _constraints()
    missing = sorted({_name(r) for r in declared} - {"torch"} - set(pins))
    assert not missing, f"add to constraints.txt (make constraints): {missing}"


def test_torch_is_pinned_in_pyproject_only() -> None:
    # The CPU build here and the CUDA build in the image share the version, not the build.
    torch = [r for r in _pyproject()["project"]["dependencies"] if _name(r) == "torch"]
    assert torch == ["torch==2.13.0"]
    assert "torch" not in _constraints()


def test_make_and_the_image_install_with_the_constraints() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install -c constraints.txt -e '.[dev]'" in makefile
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = " ".join(
        line.split(maxsplit=1)[1] for line in dockerfile.splitlines() if line.startswith("COPY ")
    )
    assert "constraints.txt" in copied
    # with OpenVINO: a CPU-only worker of the image runs the faster runtime (model/runtime.py)
    assert "RUN pip install -c constraints.txt '.[openvino]'" in dockerfile
    # Every package that pyproject.toml installs is copied into the image.
    packages = _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    for pattern in packages:
        package = pattern.rstrip("*")
        assert f"COPY {package} ./{package}" in dockerfile, package


def test_the_package_and_the_image_ship_only_the_released_artifact() -> None:
    released = (ROOT / "model" / "artifacts" / "RELEASED").read_text().strip()
    shipped = {p.name for p in (ROOT / "model" / "artifacts").iterdir() if p.is_dir()}
    assert shipped == {released}, "superseded artifacts live in model/superseded"
    data = _pyproject()["tool"]["setuptools"]["package-data"]["model"]
    assert all(p.startswith("artifacts/") for p in data), data
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"model/folds", "model/superseded"} <= set(ignored), "no member file twice"
