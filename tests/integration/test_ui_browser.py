"""The web viewer in a real headless Chromium: sign in, upload, watch the job, view a study,
box a lesion by clicking its row, sort the lesions and compare the mask with the label.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them); skipped
with a message where they cannot be found. Writes ``docs/img/viewer.png``.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from api.app import create_app
from config.settings import Settings
from tests.conftest import REPO_ROOT, WorkerProcess, bearer, create_api_key, patient_files

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENSHOT = REPO_ROOT / "docs" / "img" / "viewer.png"
JOB_SCREENSHOT = REPO_ROOT / "docs" / "img" / "viewer-job.png"
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
]
#: Whether an <img> has finished loading real pixels (a broken image has naturalWidth 0).
IMAGE_LOADED = (
    "const i = document.getElementById(arguments[0]); return i.complete && i.naturalWidth;"
)
NATURAL_SIZE = (
    "const i = document.getElementById(arguments[0]); return [i.naturalWidth, i.naturalHeight];"
)
#: Columns of the job page's table of studies.
JOB_COLUMNS = ["#", "study", "status", "lesions", "largest lesion px", "tumor area",
               "tumor fraction", "sDmax", "sDmax / height", "Dice"]  # fmt: skip


@pytest.fixture(scope="module")
def live_url(settings: Settings, worker: WorkerProcess) -> Iterator[str]:
    """The real API served by uvicorn on a free port, on the session worker's database."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "uvicorn did not start"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=15)


@pytest.fixture(scope="module")
def driver() -> Iterator[webdriver.Chrome]:
    """Headless Chromium through Debian's chromedriver (nothing is downloaded)."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(
            f"browser test needs {CHROMIUM} and {CHROMEDRIVER}: "
            "apt-get install chromium chromium-driver"
        )
    profile = tempfile.mkdtemp(prefix="tumorseg-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield chrome
    finally:
        chrome.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_sign_in_upload_watch_the_job_and_view_a_study(
    driver: webdriver.Chrome, live_url: str, settings: Settings, worker: WorkerProcess
) -> None:
    wait = WebDriverWait(driver, 30)
    key = create_api_key(settings.sqlalchemy_url, "browser", tenant="browser")

    driver.get(f"{live_url}/ui")  # no session: the sign-in page
    wait.until(ec.url_contains("/ui/login"))
    driver.find_element(By.ID, "key").send_keys("tsk_wrong")
    driver.find_element(By.ID, "sign-in").click()
    assert (
        "Invalid or revoked API key"
        in wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "p.error"))).text
    )
    driver.find_element(By.ID, "key").send_keys(key)
    driver.find_element(By.ID, "sign-in").click()
    wait.until(ec.presence_of_element_located((By.ID, "upload-form")))
    cookie = driver.get_cookie("tumorseg_session")
    assert cookie is not None
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert key not in cookie["value"]
    assert "tsk_" not in cookie["value"]

    pairs = patient_files(3)
    driver.find_element(By.ID, "files").send_keys("\n".join(str(img) for img, _ in pairs))
    driver.find_element(By.ID, "labels").send_keys("\n".join(str(lab) for _, lab in pairs))
    driver.find_element(By.ID, "submit-job").click()
    wait.until(ec.url_matches(r"/ui/jobs/\d+$"))

    # the page polls the job: wait for its own status text, not for the API
    finished = WebDriverWait(driver, 240).until(
        lambda d: (
            d.find_element(By.ID, "job-status").text
            in {"succeeded", "partially_failed", "failed", "cancelled"}
        ),
        message=f"job did not finish on the page:\n{worker.log.read_text()[-3000:]}",
    )
    assert finished
    assert driver.find_element(By.ID, "job-status").text == "succeeded"
    assert driver.find_element(By.ID, "job-progress-text").text == "100 %"
    headers = driver.find_elements(By.CSS_SELECTOR, "#studies thead th")
    assert [h.text for h in headers] == JOB_COLUMNS
    rows = driver.find_elements(By.CSS_SELECTOR, "#studies tbody tr")
    cells = [[td.text for td in r.find_elements(By.TAG_NAME, "td")] for r in rows]
    assert [c[2] for c in cells] == ["succeeded"] * 3
    assert all(c[JOB_COLUMNS.index("Dice")] != "—" for c in cells)
    assert all(c[JOB_COLUMNS.index("tumor area")].endswith(" px") for c in cells)  # no spacing
    assert all(c[JOB_COLUMNS.index("sDmax")].endswith(" px") for c in cells)
    job_id = driver.current_url.rsplit("/", 1)[1]
    for table in ("results", "lesions"):
        link = driver.find_element(By.ID, f"{table}-csv").get_attribute("href")
        assert link == f"{live_url}/ui/jobs/{job_id}/{table}.csv"

    # sort by file name descending, then filter down to one study
    header = driver.find_element(By.CSS_SELECTOR, "th[data-key=filename]")
    header.click()
    header.click()
    names = [r.find_elements(By.TAG_NAME, "td")[1].text for r in _rows(driver)]
    assert names == sorted((img.name for img, _ in pairs), reverse=True)
    driver.find_element(By.ID, "study-filter").send_keys(pairs[1][0].stem)
    assert [r.find_elements(By.TAG_NAME, "td")[1].text for r in _rows(driver)] == [pairs[1][0].name]
    Select(driver.find_element(By.ID, "status-filter")).select_by_visible_text("failed")
    assert _rows(driver) == []
    Select(driver.find_element(By.ID, "status-filter")).select_by_visible_text("all")
    driver.find_element(By.ID, "study-filter").send_keys(Keys.CONTROL, "a", Keys.BACKSPACE)
    assert len(_rows(driver)) == 3
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(JOB_SCREENSHOT))

    driver.get(f"{live_url}/ui")  # the jobs list shows the job finished, with its bar full
    listed = wait.until(
        ec.presence_of_element_located((By.CSS_SELECTOR, f"#jobs tr[data-job-id='{job_id}']"))
    )
    assert "succeeded" in listed.text
    assert "100 %" in listed.text
    bar = listed.find_element(By.TAG_NAME, "progress")
    assert float(bar.get_attribute("value") or 0) == 1.0
    driver.back()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#studies tbody tr")))

    driver.find_element(By.LINK_TEXT, pairs[0][0].name).click()
    wait.until(ec.presence_of_element_located((By.ID, "study-metrics")))
    wait.until(lambda d: d.execute_script(IMAGE_LOADED, "study-image"))
    wait.until(lambda d: d.execute_script(IMAGE_LOADED, "mask-image"))
    canvas = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "canvas[data-painted]")))
    assert int(canvas.get_attribute("data-tumor-pixels") or 0) > 0  # mask drawn over the MIP
    assert "lesion" in driver.find_element(By.ID, "lesion-count").text
    assert "attention-unet" in driver.find_element(By.ID, "study-metrics").text  # model version
    driver.find_element(By.ID, "mask-toggle").click()
    assert not canvas.is_displayed()
    driver.find_element(By.ID, "mask-toggle").click()
    assert canvas.is_displayed()
    _lesions_and_comparison(driver, live_url, key, job_id)


def _lesions_and_comparison(driver: webdriver.Chrome, live_url: str, key: str, job_id: str) -> None:
    """On the study with the most lesions: clicking a row boxes that lesion where the API
    puts it, hovering another boxes that one, the headers sort, and the label's overlay."""
    wait = WebDriverWait(driver, 30)
    job = httpx.get(f"{live_url}/v1/jobs/{job_id}", headers=bearer(key)).json()
    chosen = max(job["studies"], key=lambda s: s["biomarkers"]["lesion_count"])
    study = httpx.get(f"{live_url}/v1/studies/{chosen['id']}", headers=bearer(key)).json()
    lesions = {le["number"]: le for le in study["lesions"]}
    assert lesions, "no study of the job has a lesion"
    driver.get(f"{live_url}/ui/studies/{study['id']}")
    wait.until(lambda d: d.execute_script(IMAGE_LOADED, "study-image"))
    assert _lesion_numbers(driver) == sorted(lesions)  # largest first
    box = driver.find_element(By.ID, "lesion-box")
    assert not box.is_displayed()

    number = sorted(lesions)[min(1, len(lesions) - 1)]
    row = driver.find_element(By.CSS_SELECTOR, f"#lesions tr[data-lesion='{number}']")
    row.click()
    wait.until(ec.visibility_of(box))
    assert box.get_attribute("data-lesion") == str(number)
    assert "selected" in (row.get_attribute("class") or "").split()
    selected = driver.find_elements(By.CSS_SELECTOR, "#lesions tr[aria-selected='true']")
    assert [r.get_attribute("data-lesion") for r in selected] == [str(number)]
    size = (study["metrics"]["width"], study["metrics"]["height"])
    _assert_boxed(driver, box, lesions[number]["bbox"], size)

    if len(lesions) > 1:  # pointing at another row boxes it; leaving the table, the selection
        other = next(n for n in sorted(lesions) if n != number)
        hover = driver.find_element(By.CSS_SELECTOR, f"#lesions tr[data-lesion='{other}']")
        ActionChains(driver).move_to_element(hover).perform()
        wait.until(lambda d: box.get_attribute("data-lesion") == str(other))
        _assert_boxed(driver, box, lesions[other]["bbox"], size)
        ActionChains(driver).move_to_element(driver.find_element(By.TAG_NAME, "h1")).perform()
        wait.until(lambda d: box.get_attribute("data-lesion") == str(number))
    driver.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000

    by_area = sorted(lesions, key=lambda n: (lesions[n]["area_px"], n))
    header = driver.find_element(By.CSS_SELECTOR, "#lesions th[data-key=area_px]")
    header.click()
    assert header.get_attribute("aria-sort") == "ascending"
    assert _lesion_numbers(driver) == by_area
    assert _lesion_areas(driver) == sorted(le["area_px"] for le in lesions.values())
    header.click()
    assert header.get_attribute("aria-sort") == "descending"
    assert _lesion_areas(driver) == sorted((le["area_px"] for le in lesions.values()), reverse=True)
    still = driver.find_element(By.CSS_SELECTOR, f"#lesions tr[data-lesion='{number}']")
    assert still.get_attribute("aria-selected") == "true"  # sorting keeps the selection

    # the uploaded labels give the page its comparison overlay, with a legend
    legend = driver.find_element(By.ID, "comparison-legend")
    assert not legend.is_displayed()
    Select(driver.find_element(By.ID, "overlay-mode")).select_by_value("comparison")
    wait.until(lambda d: d.execute_script(IMAGE_LOADED, "comparison-image"))
    assert driver.find_element(By.ID, "comparison-image").is_displayed()
    assert not driver.find_element(By.ID, "mask-layer").is_displayed()
    assert legend.is_displayed()
    assert "miss" in legend.text
    assert "false positive" in legend.text
    assert box.is_displayed()  # the boxed lesion stays over either overlay


def _assert_boxed(
    driver: webdriver.Chrome, box: WebElement, bbox: list[int], size: tuple[int, int]
) -> None:
    """The highlight covers ``bbox`` (input pixels) scaled to the image as displayed."""
    natural = driver.execute_script(NATURAL_SIZE, "study-image")
    assert tuple(natural) == size
    image = driver.find_element(By.ID, "study-image").rect
    scale = min(image["width"] / size[0], image["height"] / size[1])
    left = image["x"] + (image["width"] - size[0] * scale) / 2
    top = image["y"] + (image["height"] - size[1] * scale) / 2
    row0, col0, row1, col1 = bbox
    want = {
        "x": left + col0 * scale,
        "y": top + row0 * scale,
        "width": (col1 - col0) * scale,
        "height": (row1 - row0) * scale,
    }
    got = box.rect
    assert all(abs(got[k] - want[k]) <= 1.0 for k in want), (got, want, bbox)
    assert got["width"] > 0
    assert got["height"] > 0


def _lesion_numbers(driver: webdriver.Chrome) -> list[int]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#lesions tbody tr")
    return [int(r.get_attribute("data-lesion") or 0) for r in rows]


def _lesion_areas(driver: webdriver.Chrome) -> list[int]:
    cells = driver.find_elements(By.CSS_SELECTOR, "#lesions tbody tr td:nth-child(2)")
    return [int(c.text) for c in cells]


def _rows(driver: webdriver.Chrome) -> list[WebElement]:
    return list(driver.find_elements(By.CSS_SELECTOR, "#studies tbody tr"))
