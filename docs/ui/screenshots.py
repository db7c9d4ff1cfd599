"""The screenshots in this folder, taken again: `mlflow ui` over a tracking store with the runs of `scenario.sh`
(two pix2pix runs, a CycleGAN run, their evaluation and comparison, a study with its retrain registered as
`pix2pix@champion`, two exports), in headless Chromium driven by Playwright.

    docs/ui/scenario.sh /tmp/ui && python docs/ui/screenshots.py sqlite:////tmp/ui/mlflow.db docs/ui
    # needs: pip install playwright, and chromium (Debian: apt-get install chromium)
"""

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient
from playwright.sync_api import sync_playwright

ML = "workflowType=machine_learning"


def pages(experiment_id: str) -> list[tuple[str, str]]:
    client = MlflowClient()
    runs = client.search_runs([experiment_id], order_by=["attributes.start_time ASC"])
    by_role = {}
    for run in runs:
        by_role.setdefault(run.data.tags.get("imgtrans.role"), []).append(run)
    first, second = [r for r in by_role["train"] if r.data.tags.get("model") == "pix2pix"][:2]
    study = by_role["study"][0]
    compared = f'runs=["{first.info.run_id}","{second.info.run_id}"]&experiments=["{experiment_id}"]'
    run_page = f"/#/experiments/{experiment_id}/runs"
    return [
        ("1-run-list", f"/#/experiments/{experiment_id}/runs?{ML}"),
        ("2-run-page", f"{run_page}/{second.info.run_id}?{ML}"),
        ("3-samples-card", f"/#/experiments/{experiment_id}/runs?{ML}&compareRunsMode=CHART"),
        ("4-compare-page", f"/#/compare-runs?{compared}&{ML}"),
        ("5-models-ranked", f"/#/experiments/{experiment_id}/models?{ML}"),
        ("6-registered-version", f"/#/models/pix2pix/versions/1?{ML}"),
        ("7-study-parent", f"{run_page}/{study.info.run_id}?{ML}"),
        ("8-compare-run", f"{run_page}/{by_role['compare'][0].info.run_id}?{ML}"),
    ]


def close_assistant(page) -> None:
    """MLflow 3 opens an assistant panel beside every page; it only takes room in a screenshot."""
    buttons = page.locator("button[aria-label='Close']")
    if buttons.count():
        buttons.first.click()
        time.sleep(1)


def show_samples_card(page, last_step: int) -> None:
    """The chart view's `samples` card, as a user sets it up: the charts filtered to it, MLflow's run-parameter
    text above each run's sheet switched off (card menu → Configure → Show run parameters; with a run's
    dozens of params it would fill the card), then full screen."""
    page.get_by_placeholder("Search metric charts").fill("samples")
    time.sleep(3)
    page.get_by_test_id("experiment-view-compare-runs-card-menu").first.click()
    page.get_by_role("menuitem").filter(has_text="Configure").first.click()
    time.sleep(2)
    page.get_by_label("Show run parameters").first.click()
    page.get_by_role("button", name="Save changes").click()
    time.sleep(2)
    page.locator("[data-component-id='fullscreen_button_chartcard']").first.click()
    time.sleep(2)
    step = page.get_by_role("dialog").locator("input").last  # the last step logged: the runs' final sheets
    step.fill(str(last_step))
    step.press("Tab")


def final_step(experiment_id: str) -> int:
    """The step of the pix2pix runs' last sample sheet (their last validation)."""
    client = MlflowClient()
    run = client.search_runs([experiment_id], "tags.model = 'pix2pix' and tags.`imgtrans.role` = 'train'",
                             order_by=["attributes.start_time ASC"])[0]
    return max(m.step for m in client.get_metric_history(run.info.run_id, "val/psnr"))


def reveal(page, name: str, last_step: int) -> None:
    """What a user would click to see: a description in full, the sample sheets on the compare page and in the
    chart view."""
    if name == "3-samples-card":
        show_samples_card(page, last_step)
    elif name in ("7-study-parent", "8-compare-run"):
        page.get_by_text("Show more").first.click()
    elif name == "4-compare-page":
        page.get_by_text("samples.png", exact=True).first.click()
        time.sleep(3)
        page.get_by_text("Metrics", exact=True).first.evaluate("e => e.scrollIntoView({block: 'start'})")
    else:
        return
    time.sleep(3)


def main(uri: str, out: str, experiment: str = "facades") -> None:
    out = Path(out)
    mlflow.set_tracking_uri(uri)
    experiment_id = MlflowClient().get_experiment_by_name(experiment).experiment_id
    last_step = final_step(experiment_id)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host",
                               "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(90):
            try:
                urllib.request.urlopen(base + "/health", timeout=1)
                break
            except OSError:
                time.sleep(1)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1600, "height": 2200})
            for name, path in pages(experiment_id):
                # The Models table is wide: its metric columns (test/psnr, …) start past 1,600 px.
                width = 2400 if name == "5-models-ranked" else 1600
                page.set_viewport_size({"width": width, "height": 2200})
                page.goto(base + path, wait_until="load")
                time.sleep(8)  # the UI keeps polling: no "network idle"; charts and images need the time
                close_assistant(page)
                reveal(page, name, last_step)
                # The sheets sit at the top of the samples card's full-screen view, the models at the top of
                # their table: the rest is empty.
                clip = {"x": 0, "y": 0, "width": width, "height": 620 if name == "3-samples-card" else 700} \
                    if name in ("3-samples-card", "5-models-ranked") else None
                page.screenshot(path=str(out / f"{name}.jpg"), full_page=clip is None, clip=clip, type="jpeg",
                                quality=80)
                print(out / f"{name}.jpg")
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main(*sys.argv[1:])
