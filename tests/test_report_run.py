"""The report of a real three-class run: every plot, the numbers of metrics.json, and the page as
headless Chromium renders it from disk (every image decoded, the headline metrics on screen).

Chromium is driven over its DevTools protocol (aiohttp, which Ray already installs): the page
itself stays free of test scripts, and the browser tells whether each image really loaded."""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import aiohttp
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from medray.config import load_config

from test_report_build import CALIBRATED_RUN_PLOTS, image_sources

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
HEADLINE = ["accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "roc_auc_ovr", "expected_calibration_error"]
PAGE_PROBE = """JSON.stringify({
  images: Array.from(document.images, i => ({src: i.getAttribute('src'), complete: i.complete, width: i.naturalWidth})),
  metrics: Object.fromEntries(Array.from(document.querySelectorAll('[data-metric]'),
                                         e => [e.dataset.metric, e.innerText])),
  sections: Array.from(document.querySelectorAll('h2'), h => h.innerText),
  height: document.documentElement.scrollHeight})"""


def shown_metrics(html: str) -> dict[str, str]:
    return dict(re.findall(r'data-metric="([a-z_0-9]+)">([^<]+)<', html))


def test_three_class_run_draws_every_plot(finished_run):
    assert {path.name for path in (finished_run / "plots").glob("*.png")} == CALIBRATED_RUN_PLOTS
    for path in (finished_run / "plots").glob("*.png"):
        with Image.open(path) as image:
            assert image.width >= 300 and image.height >= 300


def test_report_numbers_equal_metrics_json(finished_run):
    metrics = json.loads((finished_run / "metrics.json").read_text())
    shown = shown_metrics((finished_run / "report.html").read_text())
    assert sorted(shown) == sorted(HEADLINE)
    for name in HEADLINE:
        assert shown[name] == f"{metrics[name]:.4f}", name


def test_temperature_is_fitted_on_the_validation_split_and_the_report_shows_ece_before_and_after(finished_run):
    import pandas as pd

    calibration = json.loads((finished_run / "calibration.json").read_text())
    data = json.loads((finished_run / "data.json").read_text())
    metrics = json.loads((finished_run / "metrics.json").read_text())
    # fitted on every validation image and on nothing else
    assert calibration["fitted_on"] == "val" and calibration["shared_by"] == "classes"
    assert calibration["images"] == sum(data["class_counts"]["val"].values())
    (temperature,) = calibration["temperatures"]
    assert 0.05 < temperature < 20
    predictions = pd.read_parquet(finished_run / "predictions.parquet")
    calibrated = np.stack(predictions["calibrated_probabilities"].to_numpy())
    assert (calibrated.argmax(axis=1) == predictions["prediction"]).all()  # raw predictions kept
    assert np.allclose(calibrated.sum(axis=1), 1, atol=1e-5)
    html = (finished_run / "report.html").read_text()
    assert "plots/reliability_diagram_calibrated.png" in image_sources(html)
    before, after = metrics["expected_calibration_error"], metrics["expected_calibration_error_calibrated"]
    note = re.sub(r"\s+", " ", re.search(r'<p class="note" id="calibration">(.*?)</p>', html, re.S).group(1))
    assert f"<b>{before:.4f}</b> before, <b>{after:.4f}</b> after" in note and f"T = {temperature:.3f}" in note
    assert f"test ECE {before:.4f} -> {after:.4f}" in (finished_run / "summary.txt").read_text()


def test_report_plots_map_spread_against_correctness_with_n_per_group(finished_run):
    sample = pq.read_table(finished_run / "explain" / "sample_checks.parquet").to_pandas()
    sample = sample[sample["labelled"]]
    html = (finished_run / "report.html").read_text()
    assert "plots/map_spread_by_correctness.png" in image_sources(html)
    section = html[html.index('id="map-stability"'):]
    for correct in (True, False):
        spread = sample.loc[sample["correct"] == correct, "map_spread"]
        shown = f"{np.median(spread):.3f} (n={len(spread)})" if len(spread) else "n/a (n=0)"
        assert shown in section


def test_summary_names_the_report(finished_run):
    assert f"report     {finished_run / 'report.html'}" in (finished_run / "summary.txt").read_text()


def test_misclassified_test_images_link_their_overlays(finished_run):
    import pandas as pd

    predictions = pd.read_parquet(finished_run / "predictions.parquet")
    wrong = predictions[predictions["label"] != predictions["prediction"]]
    html = (finished_run / "report.html").read_text()
    overlays = [src for src in image_sources(html) if "/overlays/" in src]
    # up to report.examples_per_class (16) mistakes per true class, each with its overlay on disk
    assert len(overlays) == sum(min(count, 16) for count in wrong.groupby("label").size())
    assert all((finished_run / src).is_file() for src in overlays)
    # each named by its own file name (the Hugging Face image struct's path), not by its row id
    data = load_config(finished_run / "config.yaml").data.path
    names = {f"{file.name}#{row}": image["path"] for file in sorted(Path(data).glob("test-*.parquet"))
             for row, image in enumerate(pq.read_table(file, columns=["image"]).column("image").to_pylist())}
    assert all(f"{names[row_id]} → " in html for row_id in wrong["row_id"])


async def _inspect_page(url: str, user_data: Path) -> tuple[dict, bytes]:
    """Open `url` in headless Chromium, wait for its load event, return the probe and a full-page PNG."""
    browser = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", f"--user-data-dir={user_data}", "--window-size=1280,1000", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = user_data / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            assert time.monotonic() < deadline, "Chromium did not open its DevTools port"
            await asyncio.sleep(0.2)
        port = port_file.read_text().split()[0]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as response:
                target = next(t for t in await response.json() if t["type"] == "page")
            async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                ids = itertools.count(1)

                async def call(method: str, **params) -> dict:
                    call_id = next(ids)
                    await ws.send_json({"id": call_id, "method": method, "params": params})
                    while True:
                        message = await ws.receive_json(timeout=60)
                        if message.get("id") == call_id:
                            assert "error" not in message, message
                            return message["result"]
                        if message.get("method") == "Page.loadEventFired":
                            loaded.set()

                loaded = asyncio.Event()
                await call("Page.enable")
                await call("Page.navigate", url=url)
                while not loaded.is_set():  # images are part of the load event
                    message = await ws.receive_json(timeout=60)
                    if message.get("method") == "Page.loadEventFired":
                        loaded.set()
                probe = json.loads((await call("Runtime.evaluate", expression=PAGE_PROBE,
                                               returnByValue=True))["result"]["value"])
                shot = await call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                                  clip={"x": 0, "y": 0, "width": 1280, "height": probe["height"], "scale": 1})
                return probe, base64.b64decode(shot["data"])
    finally:
        browser.terminate()
        browser.wait(timeout=30)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/run installs Debian's chromium)")
def test_report_renders_in_headless_chromium_with_every_image(finished_run, tmp_path):
    report = finished_run / "report.html"
    probe, screenshot = asyncio.run(_inspect_page(report.as_uri(), tmp_path / "chromium-profile"))

    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert probe["metrics"] == {name: f"{metrics[name]:.4f}" for name in HEADLINE}
    assert {"Summary", "Data", "Training", "Metrics on the test split", "Error analysis"} <= set(probe["sections"])
    broken = [image["src"] for image in probe["images"] if not (image["complete"] and image["width"] > 0)]
    assert not broken, f"images that did not load: {broken}"
    assert {Path(image["src"]).name for image in probe["images"]} >= CALIBRATED_RUN_PLOTS

    (finished_run / "report_screenshot.png").write_bytes(screenshot)
    with Image.open(io.BytesIO(screenshot)) as image:
        pixels = np.asarray(image.convert("L"))
    assert pixels.shape[1] == 1280 and pixels.shape[0] == probe["height"] > 2000
    assert pixels.std() > 20  # a rendered page, not a blank one
