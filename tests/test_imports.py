"""Imports point one way: model/ and db/ import no other project package; the API, the
archive and the core import only the torch-free modules of model/ and never load torch; no
product package imports the tooling (bench/) or the tests."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"api", "archive", "cli", "config", "core", "db", "model", "worker"}
TOOLING = {"bench", "experiments", "scripts", "tests"}
ALLOWED = {
    "model": {"model"},
    "db": {"db"},
    "config": {"config"},
    "core": {"core", "db", "model", "config"},
    "api": {"api", "archive", "core", "db", "model", "config"},
    "archive": {"archive", "core", "db", "model", "config"},
    "worker": {"worker", "archive", "core", "db", "model", "config"},
}
#: The modules of model/ that import no torch (nor numpy at run time): all that the API,
#: the archive and the core may use of it.
TORCH_FREE_MODEL = {"model", "model.manifest", "model.png"}
TORCH_FREE_PACKAGES = ("api", "archive", "core")


def _modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _imports(path: Path) -> set[str]:
    return {name.split(".")[0] for name in _modules(path)}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_it_may(package: str) -> None:
    sources = sorted((ROOT / package).rglob("*.py"))
    assert sources, f"{package}/ has no sources"
    for path in sources:
        wrong = (_imports(path) & PROJECT) - ALLOWED[package]
        assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


@pytest.mark.parametrize("package", sorted(PROJECT))
def test_product_packages_import_no_tooling(package: str) -> None:
    for path in sorted((ROOT / package).rglob("*.py")):
        tooling = _imports(path) & TOOLING
        assert not tooling, f"{path.relative_to(ROOT)} imports {sorted(tooling)}"


@pytest.mark.parametrize("package", TORCH_FREE_PACKAGES)
def test_torch_free_packages_import_only_the_torch_free_model_modules(package: str) -> None:
    for path in sorted((ROOT / package).rglob("*.py")):
        modules = _modules(path)
        heavy = {m for m in modules if m.split(".")[0] in {"torch", "monai", "worker"}}
        heavy |= {m for m in modules if m.split(".")[0] == "model"} - TORCH_FREE_MODEL
        assert not heavy, f"{path.relative_to(ROOT)} imports {sorted(heavy)}"


def test_api_sources_never_import_numpy() -> None:
    for path in sorted((ROOT / "api").rglob("*.py")):
        assert "numpy" not in _imports(path), f"{path.relative_to(ROOT)} imports numpy"


def test_importing_the_api_the_archive_and_the_api_command_loads_no_torch() -> None:
    code = (
        "import sys\n"
        "import api.app\n"
        "from cli.main import build_parser\n"
        "build_parser('api').parse_args(['api'])\n"
        "import cli.commands.submit, cli.commands.status, cli.client\n"
        "app = api.app.create_app()\n"
        "assert app.title == 'tumorseg'\n"
        "import archive.scan, core.dispatch\n"
        "heavy = {m for m in sys.modules if m.split('.')[0] in ('torch', 'monai', 'model')}\n"
        "print(sorted(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    # the manifest and the PNG check come from model/, through its torch-free modules only
    assert out.stdout.strip() == "['model', 'model.manifest', 'model.png']"


def test_worker_parent_process_loads_no_torch_before_fork() -> None:
    code = (
        "import sys\n"
        "from config.settings import Settings\n"
        "from core.celery_app import celery_app\n"
        "modules = ['worker.tasks', 'worker.pacs_export']\n"
        "app = celery_app(Settings(redis_url='redis://127.0.0.1:6379/15'), modules)\n"
        "app.loader.import_default_modules()\n"
        "assert 'tumorseg.segment_chunk' in app.tasks\n"
        "assert 'tumorseg.pacs_export' in app.tasks\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
