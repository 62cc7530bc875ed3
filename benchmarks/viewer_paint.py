"""First paint of a whole record in the viewer: a 30-minute MIT-BIH record (about 2,000 beats)
uploaded through the page's file input in headless Chromium, against a real service process.

Printed per run (milliseconds from choosing the files):
  signal_paint  the record read and decoded in the browser and the ECG drawn (before any answer)
  answer        the service's answer arrived (upload, R-peaks, classification, report)
  beats_paint   labels, report tables and trend drawn
and, after the runs, the time from a jump to 200 places across the record to the frame painted.

    .venv/bin/python benchmarks/viewer_paint.py                       # record 100, 3 runs
    .venv/bin/python benchmarks/viewer_paint.py --record 208 --runs 5
    .venv/bin/python benchmarks/viewer_paint.py --screenshot docs/viewer.png --width 1100
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from processes import start_service, stop  # noqa: E402
from conftest import FULL_DATABASE  # noqa: E402
from test_viewer import browser_available, chromium, wait_analysed, wait_for  # noqa: E402


def redraw_ms(driver, positions: int) -> list[float]:
    """Milliseconds from a jump to `positions` evenly spaced views until the browser has painted
    the frame (two animation frames later: the redraw, raster and composite included)."""
    return driver.execute_async_script("""
        const [n, done] = [arguments[0], arguments[arguments.length - 1]];
        const strip = viewerState.strip, width = strip.scroller.scrollWidth - strip.width, times = [];
        const frame = () => new Promise(resolve => requestAnimationFrame(resolve));
        (async () => {
          for (let i = 0; i < n; i++) {
            const t0 = performance.now();
            strip.scroller.scrollLeft = width * ((i * 37) % n) / (n - 1);  // scattered, not in order
            await frame(); await frame();
            times.push(performance.now() - t0);
          }
          done(times);
        })();""", positions)


def save_screenshot(driver, path: Path, width: int) -> None:
    """The example's view (strip, a V beat's probabilities, report, trend) as a small PNG."""
    from PIL import Image

    driver.set_window_size(width, 1300)
    driver.find_element("id", "example").click()
    if wait_analysed(driver) != "ready":
        raise SystemExit(f"the example did not load: {driver.find_element('id', 'status').text}")
    for _ in range(3):
        driver.find_element("css selector", "[data-jump=V]").click()
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, height + 300)  # the window's frame takes part of it
    raw = path.with_suffix(".raw.png")
    driver.save_screenshot(str(raw))
    image = Image.open(raw).convert("RGB")
    image.crop((0, 0, image.width, min(image.height, height + 8))).quantize(colors=256).save(path, optimize=True)
    raw.unlink()
    print(f"screenshot: {path} ({path.stat().st_size // 1024} KiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--record", default="100", help="MIT-BIH record name (default 100: 2,273 annotated beats)")
    parser.add_argument("--data", type=Path, default=FULL_DATABASE,
                        help="folder of the full MIT-BIH database (default: $MITDB_DIR or ../shared/data/mitdb)")
    parser.add_argument("--runs", type=int, default=3, help="uploads of the record (default 3)")
    parser.add_argument("--screenshot", type=Path, help="also save the example's view to this PNG")
    parser.add_argument("--width", type=int, default=1280, help="browser window width for the screenshot")
    args = parser.parse_args()
    reason = browser_available()
    if reason:
        raise SystemExit(f"cannot run the browser: {reason}")
    header, signal = args.data / f"{args.record}.hea", args.data / f"{args.record}.dat"
    if not (header.is_file() and signal.is_file()):
        raise SystemExit(f"{header} / {signal} not found (set --data to the MIT-BIH folder)")

    process, base = start_service({"models_dir": ROOT / "models"})
    try:
        with chromium() as driver:
            runs = []
            for run in range(args.runs):
                driver.get(f"{base}/viewer")
                wait_for(driver, "window.viewerState && viewerState.status === 'idle'", 30)
                driver.find_element("id", "files").send_keys(f"{header}\n{signal}")
                if wait_analysed(driver) != "ready":
                    raise SystemExit(f"run {run}: {driver.find_element('id', 'status').text}")
                result = driver.execute_script("return {t: viewerState.timings, beats: viewerState.beats.length,"
                                               " seconds: viewerState.strip.duration}")
                runs.append(result["t"])
                print(json.dumps({"run": run, "record": args.record, "beats": result["beats"],
                                  "duration_s": round(result["seconds"], 1),
                                  **{k: round(v) for k, v in result["t"].items()}}))
            frames = redraw_ms(driver, 200)
            summary = {k: round(statistics.median(r[k] for r in runs)) for k in runs[0]}
            print(json.dumps({"median_ms": summary, "redraw_ms": {
                "median": round(statistics.median(frames), 2), "max": round(max(frames), 2)}}))
            if args.screenshot:
                driver.get(f"{base}/viewer")
                wait_for(driver, "window.viewerState && viewerState.status === 'idle'", 30)
                save_screenshot(driver, args.screenshot, args.width)
    finally:
        stop(process)


if __name__ == "__main__":
    main()
