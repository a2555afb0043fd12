"""A real Orthanc with its DICOMweb plugin for the PACS tests, on a free loopback port.

Debian's ``orthanc`` and ``orthanc-dicomweb`` (``.ci/run`` installs them); without them
the tests that need a PACS are skipped with the reason. Each server runs from a JSON
configuration in a temporary folder and is stopped by its process id; its storage
survives a stop, so a test can take the PACS down and bring it back.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.child_processes import tied_to_tests

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
PLUGIN_DIRS = (Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc"))


def dicomweb_plugin() -> Path | None:
    """The DICOMweb plugin's library, or None when it is not installed."""
    for folder in PLUGIN_DIRS:
        found = sorted(folder.glob("libOrthancDicomWeb.so*")) if folder.is_dir() else []
        if found:
            return found[0]
    return None


def skip_without_orthanc() -> None:
    """Skip the calling test (or fixture) when Orthanc or its DICOMweb plugin is missing."""
    if not Path(ORTHANC).exists():
        pytest.skip("Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)")
    if dicomweb_plugin() is None:
        pytest.skip("Orthanc's DICOMweb plugin is not installed (apt-get install orthanc-dicomweb)")


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Orthanc:
    """One Orthanc server: :meth:`start`, :meth:`stop`, and its DICOMweb URL.

    Args:
        folder: Its configuration, storage and log live here.
        users: HTTP basic-auth users (name: password); none: no authentication.
    """

    def __init__(self, folder: Path, users: dict[str, str] | None = None) -> None:
        self.folder = folder
        self.port = free_port()
        self.users = users or {}
        self.log = folder / "orthanc.log"
        self.proc: subprocess.Popen[bytes] | None = None
        plugin = dicomweb_plugin()
        config = {
            "Name": "tumorseg-test",
            "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "storage"),
            "HttpPort": self.port,
            "DicomServerEnabled": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users,
            "Plugins": [str(plugin)] if plugin else [],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
            "HttpTimeout": 30,
        }
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "orthanc.json").write_text(json.dumps(config, indent=2))

    @property
    def root(self) -> str:
        """The REST root (``/instances``, ``/system``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb root a PACS endpoint names."""
        return f"{self.root}/dicom-web"

    def start(self, timeout: float = 30) -> None:
        """Start the server and wait until its REST API and DICOMweb answer."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                tied_to_tests([ORTHANC, str(self.folder / "orthanc.json")]),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        auth = next(iter(self.users.items()), None)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"Orthanc exited early:\n{self.log.read_text()[-3000:]}")
            try:
                answer = httpx.get(f"{self.dicomweb_url}/studies", auth=auth, timeout=2)
                if answer.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                log = self.log.read_text()[-3000:]
                pytest.fail(f"Orthanc did not answer in {timeout}s:\n{log}")
            time.sleep(0.1)

    def stop(self, graceful: bool = True) -> None:
        """Stop the server by its process id and wait for it: SIGTERM (then SIGKILL),
        or at once with SIGKILL (a crash; quicker at a test's end)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM if graceful else signal.SIGKILL)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def get(self, path: str) -> httpx.Response:
        """GET on its REST API (``/studies``, ``/series/ID``...)."""
        auth = next(iter(self.users.items()), None)
        return httpx.get(f"{self.root}{path}", auth=auth, timeout=10)
