"""The viewer at /viewer and the API docs at /docs, in a real headless Chromium against a real
`ecg-serve`: pages load with nothing fetched from elsewhere, the example shows labelled beats and
its rhythm report, the jump buttons move the view, uploads (WFDB, CSV) work and bad ones are
explained. Skipped where Chromium, its driver or selenium is absent."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import wfdb

from conftest import ROOT, served

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,1300")
ARTEFACTS = ROOT / "build" / "viewer"


def browser_available() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not Path(path).is_file():
            return f"{path} not found (apt-get install {package})"
    return None


@contextlib.contextmanager
def chromium():
    """A headless Chromium with a fresh profile, driven through chromedriver, logging the network."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    with tempfile.TemporaryDirectory(prefix="ecg-chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        try:
            driver.set_script_timeout(60)
            network_requests(driver)  # what the browser fetched for itself before the test's pages
            yield driver
        finally:
            driver.quit()


def network_requests(driver) -> list[dict]:
    """Web requests (http, https, ws) since the last call: url, status, error."""
    requests: dict[str, dict] = {}
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message["method"] == "Network.requestWillBeSent" and urlsplit(params["request"]["url"]).scheme in (
                "http", "https", "ws", "wss"):
            requests[params["requestId"]] = {"url": params["request"]["url"], "status": None, "error": None}
        elif message["method"] == "Network.responseReceived" and params["requestId"] in requests:
            requests[params["requestId"]]["status"] = params["response"]["status"]
        elif message["method"] == "Network.loadingFailed" and params["requestId"] in requests:
            requests[params["requestId"]]["error"] = params["errorText"]
    return list(requests.values())


def assert_only_local(requests: list[dict], base: str) -> None:
    assert requests, "no requests were logged"
    host = urlsplit(base).netloc
    external = [r["url"] for r in requests if urlsplit(r["url"]).netloc != host]
    assert not external, f"requests to other hosts: {external}"
    failed = [r for r in requests if r["error"] or (r["status"] or 0) >= 400]
    assert not failed, f"failed requests: {failed}"


def wait_for(driver, script: str, seconds: float = 120):
    """Poll a JavaScript expression until it is truthy; its value."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, poll_frequency=0.2).until(lambda d: d.execute_script(f"return {script}"))


def open_viewer(driver, base: str) -> None:
    driver.get(f"{base}/viewer")
    wait_for(driver, "window.viewerState && document.getElementById('model').options.length > 1", 30)


def wait_analysed(driver) -> str:
    status = wait_for(driver, "['ready', 'error'].includes(viewerState.status) && viewerState.status", 240)
    return status


@pytest.fixture(scope="module")
def service():
    with served() as (base, _):
        yield base


@pytest.fixture(scope="module")
def browser():
    reason = browser_available()
    if reason:
        pytest.skip(reason)
    with chromium() as driver:
        yield driver


def test_front_page_links_the_viewer_and_the_docs(service):
    page = httpx.get(f"{service}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'href="viewer/"' in page.text and 'href="docs"' in page.text
    redirect = httpx.get(f"{service}/viewer")
    assert redirect.status_code == 307 and redirect.headers["location"] == "viewer/"
    viewer = httpx.get(f"{service}/viewer/")
    assert viewer.status_code == 200 and "viewer.js" in viewer.text
    example = httpx.get(f"{service}/viewer/examples/208.hea")
    assert example.status_code == 200 and example.text.startswith("208 2 360 43200")
    metrics = httpx.get(f"{service}/metrics").text  # the page's files counted under their mount
    assert re.search(r'ecg_http_request_duration_seconds_count\{[^}]*route="/viewer"[^}]*status="200"', metrics)


def test_every_static_file_is_package_data():
    """An installed service (pip install ., the image) serves the same pages: pyproject's
    package-data globs cover every file under service/static."""
    import fnmatch
    import tomllib

    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["service"]
    static = ROOT / "service" / "static"
    files = [path.relative_to(ROOT / "service").as_posix() for path in static.rglob("*") if path.is_file()]
    assert "static/index.html" in files and "static/examples/208.dat" in files
    missed = [f for f in files if not any(fnmatch.fnmatch(f, g) and f.count("/") == g.count("/") for g in globs)]
    assert not missed, f"not in [tool.setuptools.package-data]: {missed}"


@pytest.mark.parametrize("page", ["docs", "redoc"])
def test_docs_reference_no_other_host_and_their_assets_are_served(service, page):
    html = httpx.get(f"{service}/{page}").text
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url:\s*['"]([^'"]+)['"]""", html)
    urls = [a or b for a, b in urls]
    assert urls, html
    assert not re.search(r"https?://|//cdn|fonts\.googleapis", html), html
    for url in urls:
        answer = httpx.get(f"{service}{url}" if url.startswith("/") else f"{service}/{url}")
        assert answer.status_code == 200, url
        assert answer.content, url


def test_swagger_ui_renders_offline(service, browser):
    browser.get(f"{service}/docs")
    operations = wait_for(browser, "document.querySelectorAll('.opblock').length", 60)
    assert operations >= 5
    assert_only_local(network_requests(browser), service)


def test_example_shows_labelled_beats_report_and_jumps(service, browser):
    open_viewer(browser, service)
    browser.find_element("id", "example").click()
    assert wait_analysed(browser) == "ready", browser.find_element("id", "status").text
    state = browser.execute_script("return {beats: viewerState.beats, drawn: viewerState.strip.drawnBeats,"
                                   " view: viewerState.view, answer: viewerState.answer}")
    labels = [beat["label"] for beat in state["beats"]]
    assert len(labels) > 150 and "V" in labels and "N" in labels  # 2 minutes of record 208
    assert state["drawn"] > 5  # labels painted in the first view
    assert_only_local(network_requests(browser), service)

    report = state["answer"].get("report")
    if report is None:
        pytest.fail("the strip answer carries no report")
    table = browser.find_element("id", "report-hr").text
    assert f"{report['heart_rate']['mean_bpm']:.1f}" in table
    beats_table = browser.find_element("id", "report-beats").text
    assert re.search(rf"\bV {report['beats']['V']}\b", beats_table), beats_table
    assert browser.find_element("id", "report-ectopy-V").is_displayed()
    expected_points = sum(1 for w in report["heart_rate"]["trend"] if w["bpm"] is not None)
    assert browser.execute_script("return viewerState.trend.points") == expected_points > 0

    # a time in the report is a link to that place on the strip
    browser.find_element("css selector", "#report-hr a[data-time]").click()
    linked = float(browser.find_element("css selector", "#report-hr a[data-time]").get_attribute("data-time"))
    view = browser.execute_script("return viewerState.view")
    assert view["start"] <= linked <= view["end"], (linked, view)
    browser.execute_script("viewerState.strip.scrollTo(0)")

    # next V, until the view has to move: every stop is a V beat, later than the last, and in view
    before = browser.execute_script("return viewerState.view.scrollLeft")
    last_time = -1.0
    for _ in range(len(labels)):
        browser.find_element("css selector", "[data-jump=V]").click()
        chosen = browser.execute_script("return {beat: viewerState.selected, view: viewerState.view}")
        assert chosen["beat"]["label"] == "V" and chosen["beat"]["time_s"] > last_time
        assert chosen["view"]["start"] <= chosen["beat"]["time_s"] <= chosen["view"]["end"]
        last_time = chosen["beat"]["time_s"]
        if chosen["view"]["scrollLeft"] > before:
            break
    else:
        pytest.fail("next V never moved the view")
    panel = browser.find_element("id", "beat").text
    assert "V beat" in panel and re.search(r"V\s+0\.\d{3}", panel), panel

    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTEFACTS / "viewer-example.png"
    browser.save_screenshot(str(shot))
    print(f"viewer screenshot: {shot}")


def test_clicking_a_beat_shows_its_probabilities(service, browser):
    open_viewer(browser, service)
    browser.find_element("id", "example").click()
    assert wait_analysed(browser) == "ready"
    from selenium.webdriver.common.action_chains import ActionChains

    beat = browser.execute_script("return viewerState.beats[3]")
    canvas = browser.find_element("id", "strip")
    width = canvas.size["width"]
    x = round(beat["time_s"] * 100 - browser.execute_script("return viewerState.view.scrollLeft"))  # 100 px/s
    ActionChains(browser).move_to_element_with_offset(canvas, x - width // 2, 0).click().perform()
    chosen = browser.execute_script("return viewerState.selected")
    assert chosen["index"] == 3 and chosen["sample"] == beat["sample"]
    panel = browser.find_element("id", "beat").text
    for cls, p in beat["probabilities"].items():
        assert f"{cls}\n{p:.3f}" in panel or f"{cls} {p:.3f}" in panel, panel


def test_page_still_works_without_a_report(service, browser):
    """An answer without `report` (a service from before it): the counts show, and a note."""
    open_viewer(browser, service)
    browser.find_element("id", "example").click()
    assert wait_analysed(browser) == "ready"
    counts = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        import('./report.js').then(m => {
          const answer = {...viewerState.answer}; delete answer.report;
          m.renderReport(document.getElementById('report'), answer, () => {});
          done(document.getElementById('report').innerText);
        });""")
    assert "no rhythm report" in counts
    summary = browser.execute_script("return viewerState.answer.summary")
    assert re.search(rf"\bN {summary['counts']['N']}\b", counts.replace("\t", " ")), counts


def test_wfdb_decoding_in_the_browser_matches_wfdb(service, browser, tmp_path, fixture_dir):
    """Formats 212 (the example) and 16 (written here) decode to the samples wfdb reads, in mV."""
    open_viewer(browser, service)
    reference = wfdb.rdrecord(str(fixture_dir / "208"))
    wfdb.wrsamp("fmt16", fs=250, units=["mV", "mV"], sig_name=["V1", "MLII"], fmt=["16", "16"],
                adc_gain=[400.0, 400.0], baseline=[12, -5], write_dir=str(tmp_path),
                p_signal=reference.p_signal[:5000])
    written = wfdb.rdrecord(str(tmp_path / "fmt16"))
    decode = """
        const [hea, dat, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
        import('./wfdb.js').then(m => {
          const header = m.parseHeader(hea);
          const bytes = Uint8Array.from(atob(dat), c => c.charCodeAt(0));
          const lead = m.defaultLead(header);
          done({lead, fs: header.fs, mv: Array.from(m.decodeLead(header, bytes.buffer, lead))});
        });"""
    for record, stem in ((reference, fixture_dir / "208"), (written, tmp_path / "fmt16")):
        out = browser.execute_async_script(decode, Path(f"{stem}.hea").read_text(),
                                           base64.b64encode(Path(f"{stem}.dat").read_bytes()).decode())
        assert record.sig_name[out["lead"]] == "MLII" and out["fs"] == record.fs
        np.testing.assert_allclose(out["mv"], record.p_signal[:, out["lead"]], atol=1e-6)


def test_other_signal_formats_are_refused_with_a_message(service, browser):
    open_viewer(browser, service)
    message = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        import('./wfdb.js').then(m => {
          try { m.decodeLead(m.parseHeader('r 1 360 10\\nr.dat 310 200 12 0 0 0 0 I'), new ArrayBuffer(40), 0); done('decoded'); }
          catch (err) { done(err.message); }
        });""")
    assert "format 310" in message and "212 and 16" in message


def test_csv_strip_upload(service, browser, tmp_path, fixture_dir):
    record = wfdb.rdrecord(str(fixture_dir / "100"), sampto=360 * 30)
    strip = tmp_path / "strip.csv"
    times = np.arange(record.sig_len) / record.fs
    strip.write_text("time_s,mV\n" + "\n".join(f"{t:.6f},{v:.3f}" for t, v in zip(times, record.p_signal[:, 0])))
    open_viewer(browser, service)
    browser.find_element("id", "files").send_keys(str(strip))
    browser.find_element("id", "analyse").click()
    assert wait_analysed(browser) == "ready", browser.find_element("id", "status").text
    state = browser.execute_script("return {beats: viewerState.beats.length, fs: viewerState.strip.fs,"
                                   " rate: viewerState.answer.summary.sampling_rate}")
    assert state["fs"] == state["rate"] == 360
    assert 30 <= state["beats"] <= 45  # 30 s of sinus rhythm near 75 bpm


def test_a_header_alone_or_a_one_column_csv_without_rate_is_explained(service, browser, tmp_path, fixture_dir):
    open_viewer(browser, service)
    browser.find_element("id", "files").send_keys(str(fixture_dir / "208.hea"))
    assert wait_analysed(browser) == "error"
    assert 'names its signal file "208.dat"' in browser.find_element("id", "status").text
    one_column = tmp_path / "mv.csv"
    one_column.write_text("\n".join(["0.1"] * 5000))
    browser.find_element("id", "files").clear()
    browser.find_element("id", "files").send_keys(str(one_column))
    browser.find_element("id", "analyse").click()
    assert wait_analysed(browser) == "error"
    assert "Rate (Hz)" in browser.find_element("id", "status").text


def test_a_record_the_service_refuses_is_explained(service, browser, fixture_dir, tmp_path):
    """An annotation file sent as the signal: the service's 422 is shown, naming the field."""
    atr = tmp_path / "208.dat"
    atr.write_bytes((fixture_dir / "208.atr").read_bytes()[:3000])
    open_viewer(browser, service)
    browser.find_element("id", "files").send_keys(f"{fixture_dir / '208.hea'}\n{atr}")
    assert wait_analysed(browser) == "error"
    status = browser.find_element("id", "status").text
    assert "the service refused the record (422): body.signal:" in status and ".dat" in status, status


def test_a_beat_whose_s_went_to_n_in_a_random_rhythm_says_so(service, browser):
    """A beat whose RR intervals meet the criteria of atrial fibrillation (`af_criteria`) tells the
    reader why it is not called S; the others do not."""
    open_viewer(browser, service)
    browser.find_element("id", "example").click()
    assert wait_analysed(browser) == "ready"
    browser.execute_script("""
        const beats = viewerState.beats.map((b, i) => ({...b, af_criteria: i === 3}));
        viewerState.beats = beats;
        viewerState.strip.setBeats(beats, []);""")
    from selenium.webdriver.common.action_chains import ActionChains

    canvas = browser.find_element("id", "strip")
    for index, shown in ((3, True), (4, False)):
        beat = browser.execute_script(f"return viewerState.beats[{index}]")
        x = round(beat["time_s"] * 100 - browser.execute_script("return viewerState.view.scrollLeft"))  # 100 px/s
        ActionChains(browser).move_to_element_with_offset(canvas, x - canvas.size["width"] // 2, 0).click().perform()
        assert browser.execute_script("return viewerState.selected")["index"] == index
        panel = browser.find_element("id", "beat").text
        assert ("criteria of atrial fibrillation: S not called" in panel) is shown, panel


def test_beats_flagged_for_review_are_marked_and_reachable(service, browser):
    """Beats with `review: true` and a `confidence` (answers that carry them): next review stops
    at each flagged beat in turn, and the beat's panel says so with its confidence."""
    open_viewer(browser, service)
    browser.find_element("id", "example").click()
    assert wait_analysed(browser) == "ready"
    flagged = browser.execute_script("""
        const beats = viewerState.beats.map((b, i) => ({...b, review: i % 50 === 7, confidence: 0.5 + i / 1000}));
        viewerState.beats = beats;
        viewerState.strip.setBeats(beats, []);
        return beats.filter(b => b.review).map(b => b.sample);""")
    assert len(flagged) >= 3
    for sample in flagged:
        browser.find_element("css selector", "[data-jump=review]").click()
        chosen = browser.execute_script("return viewerState.selected")
        assert chosen["sample"] == sample and chosen["review"] is True
        panel = browser.find_element("id", "beat").text
        assert "flagged for review" in panel and f"confidence {chosen['confidence']:.3f}" in panel
    browser.find_element("css selector", "[data-jump=review]").click()
    assert "no beat for review after this point" in browser.find_element("id", "status").text
