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
from typing import Any

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
#: Window sizes the study page's layers are checked at: a laptop, two desktop screens and a
#: portrait monitor (where a stretched mask layer was 2.2 times as tall as the image).
WINDOW_SIZES = [(1366, 900), (1920, 1200), (2560, 1440), (1080, 1920)]
#: Browser zoom at a window size: the page laid out in a viewport 1/zoom as wide and tall,
#: drawn with zoom device pixels per CSS pixel.
ZOOMS = [((1920, 1200), 1.5), ((1080, 1920), 1.25)]
#: The box in which an <img> or <canvas> paints its pixels, in CSS px of the viewport:
#: its content box, reduced by `object-fit` to the part its natural size fills.
_DRAWN = """
function drawn(el) {
  const r = el.getBoundingClientRect();
  const cs = getComputedStyle(el);
  const px = (name) => parseFloat(cs[name]) || 0;
  const x = r.left + px("borderLeftWidth") + px("paddingLeft");
  const y = r.top + px("borderTopWidth") + px("paddingTop");
  const w = r.right - px("borderRightWidth") - px("paddingRight") - x;
  const h = r.bottom - px("borderBottomWidth") - px("paddingBottom") - y;
  const nw = el.tagName === "CANVAS" ? el.width : el.naturalWidth;
  const nh = el.tagName === "CANVAS" ? el.height : el.naturalHeight;
  let s = null;
  if (cs.objectFit === "contain") { s = Math.min(w / nw, h / nh); }
  if (cs.objectFit === "scale-down") { s = Math.min(1, w / nw, h / nh); }
  if (cs.objectFit === "cover") { s = Math.max(w / nw, h / nh); }
  if (cs.objectFit === "none") { s = 1; }
  const dw = s === null ? w : nw * s;
  const dh = s === null ? h : nh * s;
  return {x: x + (w - dw) / 2, y: y + (h - dh) / 2, width: dw, height: dh,
          natural: [nw, nh], position: cs.objectPosition};
}
"""
DRAWN_BOX = _DRAWN + "return drawn(document.getElementById(arguments[0]));"
#: The lesion box mapped through the mask layer's drawn box into mask pixels (row0, col0,
#: row1, col1), mask pixels per CSS px, and the mask's tumor pixels in the lesion's bbox:
#: all of them, and those on each of its four edges.
_BOX_ON_MASK = """
const [r0, c0, r1, c1] = arguments[0];
const canvas = document.getElementById("mask-layer");
const box = document.getElementById("lesion-box").getBoundingClientRect();
const m = drawn(canvas);
const sx = canvas.width / m.width;
const sy = canvas.height / m.height;
const rows = r1 - r0;
const cols = c1 - c0;
const alpha = canvas.getContext("2d").getImageData(c0, r0, cols, rows).data;
const on = (r, c) => alpha[4 * (r * cols + c) + 3] > 0;
let inside = 0, top = 0, bottom = 0, left = 0, right = 0;
for (let r = 0; r < rows; r++) {
  for (let c = 0; c < cols; c++) {
    if (!on(r, c)) { continue; }
    inside++;
    if (r === 0) { top++; }
    if (r === rows - 1) { bottom++; }
    if (c === 0) { left++; }
    if (c === cols - 1) { right++; }
  }
}
return {box: [(box.top - m.y) * sy, (box.left - m.x) * sx, (box.bottom - m.y) * sy,
              (box.right - m.x) * sx],
        scale: Math.max(sx, sy), inside: inside, edges: [top, left, bottom, right]};
"""
BOX_ON_MASK = _DRAWN + _BOX_ON_MASK
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
    driver.find_element(By.ID, "job-name").send_keys("browser upload")
    driver.find_element(By.ID, "submit-job").click()
    wait.until(ec.url_matches(r"/ui/jobs/\d+$"))
    assert driver.find_element(By.ID, "job-name").text == "browser upload"

    # the page polls the job: wait for its own status, not for the API
    _wait_finished(driver, worker)
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
    assert "browser upload" in listed.text  # the job's name
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
    _failures_in_words(driver, live_url, key, worker)


def _wait_finished(driver: webdriver.Chrome, worker: WorkerProcess) -> None:
    """Wait until the job page shows its job finished."""
    WebDriverWait(driver, 240).until(
        lambda d: (
            d.find_element(By.ID, "job-status").get_attribute("data-status")
            in {"succeeded", "partially_failed", "failed", "cancelled"}
        ),
        message=f"job did not finish on the page:\n{worker.log.read_text()[-3000:]}",
    )


def _failures_in_words(
    driver: webdriver.Chrome, live_url: str, key: str, worker: WorkerProcess
) -> None:
    """A job with a study that is not an image: the job page says "partially failed" in
    words, and the failed study's row shows why it failed."""
    ((image, _),) = patient_files(1)
    files = [
        ("files", (image.name, image.read_bytes(), "image/png")),
        ("files", ("scan.png", b"this is not a PNG", "image/png")),
    ]
    response = httpx.post(
        f"{live_url}/v1/jobs", files=files, data={"name": "mixed"}, headers=bearer(key)
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    driver.get(f"{live_url}/ui/jobs/{job_id}")
    _wait_finished(driver, worker)
    status = driver.find_element(By.ID, "job-status")
    assert status.get_attribute("data-status") == "partially_failed"
    assert status.text == "partially failed"
    counts = driver.find_element(By.ID, "job-counts").text
    assert "_" not in counts
    assert "1 failed" in counts
    cells = {
        r.find_elements(By.TAG_NAME, "td")[1].text: r.find_elements(By.TAG_NAME, "td")[2]
        for r in _rows(driver)
    }
    failed = cells["scan.png"]
    reason = failed.find_element(By.CSS_SELECTOR, ".reason")
    assert reason.is_displayed()
    assert "PNG" in reason.text  # the reason the intake gave, in the table itself
    assert failed.text.startswith("failed")
    assert cells[image.name].text == "succeeded"
    driver.get(f"{live_url}/ui")
    listed = WebDriverWait(driver, 30).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, f"#jobs tr[data-job-id='{job_id}']"))
    )
    assert "mixed" in listed.text
    assert "partially failed" in listed.text
    assert "partially_failed" not in listed.text


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
    problems = []  # at every window size, the layers and the box stay on the image
    for width, height in WINDOW_SIZES:
        driver.set_window_size(width, height)
        problems += _layer_off_image(driver, "mask-layer", (width, height))
        problems += _box_off_mask(driver, lesions[number], size, (width, height))
    for (width, height), zoom in ZOOMS:  # and zoomed in
        driver.set_window_size(width, height)
        inner = driver.execute_script("return [innerWidth, innerHeight];")
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {
                "width": round(inner[0] / zoom),
                "height": round(inner[1] / zoom),
                "deviceScaleFactor": zoom,
                "mobile": False,
            },
        )
        window = (width, height)
        problems += [f"{p} at {zoom:.0%}" for p in _layer_off_image(driver, "mask-layer", window)]
        problems += [
            f"{p} at {zoom:.0%}" for p in _box_off_mask(driver, lesions[number], size, window)
        ]
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    driver.set_window_size(1280, 1000)
    assert not problems, "\n".join(problems)
    _assert_boxed(driver, box, lesions[number]["bbox"], size)

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
    problems = []
    for width, height in WINDOW_SIZES:
        driver.set_window_size(width, height)
        problems += _layer_off_image(driver, "comparison-image", (width, height))
    driver.set_window_size(1280, 1000)
    assert not problems, "\n".join(problems)


def _layer_off_image(driver: webdriver.Chrome, layer: str, window: tuple[int, int]) -> list[str]:
    """Where the layer does not paint its pixels in the box where the study image paints
    its own, to within 1 CSS px on each side (nothing when it does)."""
    image = driver.execute_script(DRAWN_BOX, "study-image")
    over = driver.execute_script(DRAWN_BOX, layer)
    assert image["position"] == over["position"] == "50% 50%"
    assert over["natural"] == image["natural"], (layer, over, image)
    assert image["height"] >= 360  # the viewer's least height: nothing collapsed
    got = {k: round(over[k], 1) for k in ("x", "y", "width", "height")}
    want = {k: round(image[k], 1) for k in ("x", "y", "width", "height")}
    if all(abs(got[k] - want[k]) <= 1.0 for k in want):
        return []
    return [f"{window[0]}x{window[1]}: the {layer} is drawn at {got}, the image at {want}"]


def _box_off_mask(
    driver: webdriver.Chrome,
    lesion: dict[str, Any],
    size: tuple[int, int],
    window: tuple[int, int],
) -> list[str]:
    """Where the clicked lesion's box, read through the mask layer, misses the lesion's bbox
    by more than 1 CSS px (nothing when it covers it). The mask's tumor pixels fill that
    bbox: the lesion's area at least, and tumor on each of its four edges (a bbox is tight)."""
    bbox = lesion["bbox"]
    on_mask = driver.execute_script(BOX_ON_MASK, bbox)
    assert on_mask["inside"] >= lesion["area_px"], on_mask
    assert all(n > 0 for n in on_mask["edges"]), on_mask
    tolerance = on_mask["scale"]  # 1 CSS px in mask pixels
    if all(abs(a - b) <= tolerance for a, b in zip(on_mask["box"], bbox, strict=True)):
        return []
    return [
        f"{window[0]}x{window[1]}: the box of lesion {lesion['number']} sits on mask pixels "
        f"{[round(v, 1) for v in on_mask['box']]}, its bbox is {bbox} (image {size})"
    ]


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
