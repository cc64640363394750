"""The web dashboard in a real headless Chromium (Debian's `chromium` + `chromedriver`, driven by
Selenium) against the real service: uvicorn API, Celery worker, Postgres, Redis, the tiny model.

A screenshot of a finished job's page is saved to $RLHF_TEST_ARTIFACTS (default: test-artifacts/
at the repository root) as dashboard-job.png.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest

from tests import infra, preflight
from tests.integration.helpers import jsonl, preference_line, upload

CHROMIUM, CHROMEDRIVER = preflight.chromium(), preflight.chromedriver()

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="no chromium/chromedriver binary (Debian: apt-get install chromium chromium-driver; "
                              "scripts/test.sh installs them when run as root; with CI set this skip fails)"),
]

ARTIFACTS = Path(os.environ.get("RLHF_TEST_ARTIFACTS") or infra.REPO / "test-artifacts")
DATASET = jsonl([preference_line(f"What is {i} plus {i}?", f"{2 * i}.", f"Maybe {2 * i + 1}, I am not sure.")
                 for i in range(8)])


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager fetch a browser or driver
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--lang=en-US", "--hide-scrollbars"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver, condition, timeout: float = 30, what: str = "condition"):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)
    except TimeoutException:
        logs = [e["message"] for e in driver.get_log("browser")][-10:]
        raise AssertionError(f"timed out waiting for {what}; url={driver.current_url}; console: {logs}") from None


def css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


_READ = """const [selector, name] = arguments;
return Array.from(document.querySelectorAll(selector), e =>
    name === "innerText" ? e.innerText : typeof e[name] === "string" ? e[name] : e.getAttribute(name));"""


def read(driver, selector: str, name: str) -> list[str | None]:
    """`name` of every element `selector` matches, read in one script. The page re-renders as
    events arrive, so an element found by one WebDriver call may be gone (stale) at the next.
    A string property wins over the attribute (`href`: the absolute URL, as a browser sees it)."""
    return driver.execute_script(_READ, selector, name)


def first(driver, selector: str, name: str) -> str | None:
    values = read(driver, selector, name)
    return values[0] if values else None


def create_job(client: httpx.Client, file_id: str, **hyperparameters) -> dict:
    body = {"model": "tiny-random-llama", "training_file": file_id, "seed": 3, "suffix": "dash",
            "method": {"type": "dpo", "dpo": {"hyperparameters": {
                "n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 10, **hyperparameters}}}}
    response = client.post("/v1/fine_tuning/jobs", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_job_page_live_curves_events_checkpoints(api_server, worker, browser):
    """A job created by the test: its page streams events live, draws one point per step, lists
    checkpoints with download links, and the compare page overlays it. Screenshot saved."""
    with httpx.Client(base_url=api_server, timeout=30) as client:
        file_id = upload(client, DATASET).json()["id"]
        job = create_job(client, file_id)
        browser.get(f"{api_server}/dashboard/#/jobs/{job['id']}")

        # The stream is open and the first events are shown before any step was logged...
        wait(browser, lambda d: int(first(d, "#event-log", "data-count") or 0) >= 2, 30, "the first events")
        metric_lines_at_start = len(css(browser, "#event-log .log-line.metrics"))
        steps_at_start = client.get(f"/v1/fine_tuning/jobs/{job['id']}").json()["steps_completed"]
        # ...and a metrics event arrives live, without reloading the page.
        wait(browser, lambda d: css(d, "#event-log .log-line.metrics"), 120, "a live metrics event")
        assert css(browser, "#stream-state.live") or css(browser, "#stream-state.ended")

        deadline = time.monotonic() + 150
        finished = ("succeeded", "failed", "cancelled")
        while (job := client.get(f"/v1/fine_tuning/jobs/{job['id']}").json())["status"] not in finished:
            assert worker.poll() is None and time.monotonic() < deadline, worker.log_path.read_text()[-3000:]
            time.sleep(0.5)
        assert job["status"] == "succeeded", job
        total = job["total_steps"]
        assert total == 4

        # The page follows: status, every metrics line, the loss curve with one point per step.
        wait(browser, lambda d: css(d, ".page-head .badge[data-status=succeeded]"), 20, "the succeeded badge")
        wait(browser, lambda d: len(css(d, "#event-log .log-line.metrics")) == total, 20, "all metrics events")
        assert metric_lines_at_start < total, "every metrics event was already there: nothing arrived live"
        assert steps_at_start < total
        rows = client.get(f"/v1/fine_tuning/jobs/{job['id']}/metrics").json()["data"]
        assert len([r for r in rows if "loss" in r["values"]]) == total
        loss_path = '#charts [data-key="loss"] path.series[data-series="loss"]'
        wait(browser, lambda d: first(d, loss_path, "data-points") == str(total), 20, f"a loss curve of {total} points")
        d_attr = first(browser, loss_path, "d")
        assert d_attr.count("L") == total - 1 and d_attr.startswith("M")
        for key in ("rewards/margins", "rewards/accuracies"):
            assert first(browser, f'#charts [data-key="{key}"] path.series', "data-points") == str(total)

        # Checkpoints with their metrics and download links; the final adapter link.
        checkpoints = client.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints").json()["data"]
        wait(browser, lambda d: len(css(d, "#checkpoints tbody tr")) == len(checkpoints) > 0, 20, "the checkpoints")
        links = read(browser, "#checkpoints a.download-link", "href")
        assert sorted(links) == sorted(f"{api_server}/v1/fine_tuning/jobs/{job['id']}/checkpoints/{c['id']}/adapter"
                                       for c in checkpoints)
        assert client.get(links[0]).headers["content-type"] == "application/zip"
        # Each checkpoint's event is marked by its kind (what the page reads), not by its message.
        assert len(read(browser, '#event-log .log-line[data-kind="checkpoint"]', "data-id")) == len(checkpoints)
        # Samples: each prompt's base reply (step 0) beside the final evaluation's (step 4).
        wait(browser, lambda d: read(d, "#samples-card .sample .sample-reply", "data-step") == ["0", "4"] * 4, 20,
             "each prompt's base and step-4 replies")
        assert read(browser, "#sample-steps button", "data-step") == ["4"]
        samples = client.get(f"/v1/fine_tuning/jobs/{job['id']}/samples").json()["data"]
        shown = read(browser, '#samples-card .sample[data-index="0"] .sample-reply .sample-text', "textContent")
        assert shown == [s["completion"] for s in samples if s["index"] == 0]
        final = first(browser, "#final-adapter", "href")
        assert final == f"{api_server}/v1/fine_tuning/jobs/{job['id']}/adapter"
        assert json.loads(first(browser, "#method-json", "innerText"))["dpo"]["hyperparameters"]["batch_size"] == 4

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "dashboard-job.png"
        browser.set_window_size(1400, 1500)
        time.sleep(0.5)  # charts redraw at the new width
        browser.save_screenshot(str(shot))
        browser.set_window_size(1400, 1000)
        assert shot.stat().st_size > 10_000
        print(f"\nscreenshot: {shot}")

        # The compare page overlays this job's curve (one series per job).
        browser.get(f"{api_server}/dashboard/#/compare?jobs={job['id']}&key=loss")
        series = f'#compare-chart path.series[data-series="{job["id"]}"]'
        wait(browser, lambda d: first(d, series, "data-points") == str(total), 20, "the compare curve")


def test_every_module_is_served_as_javascript(idle_api):
    """The page's ES modules, followed from app.js through their imports, come back as JavaScript
    (a browser refuses a module script of any other type), every module in static/ is reached
    (none is left over), and none writes an inline style: styles live in style.css."""
    import re

    from service.api.dashboard import STATIC

    seen, todo = set(), ["app.js"]
    with httpx.Client(base_url=idle_api.url, timeout=30) as client:
        assert '<script type="module" src="/dashboard/static/app.js">' in client.get("/dashboard/").text
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            r = client.get(f"/dashboard/static/{name}")
            assert r.status_code == 200, name
            assert r.headers["content-type"].startswith("text/javascript"), (name, r.headers["content-type"])
            assert not re.search(r"""style\s*[=:]\s*["'`]""", r.text), f"{name} writes an inline style"
            todo += re.findall(r'from "\./([\w.-]+)"', r.text)
        assert client.get("/dashboard/static/style.css").headers["content-type"].startswith("text/css")
    assert seen == {p.name for p in STATIC.glob("*.js")}


def test_jobs_list_shows_created_job_and_filters(idle_api, browser):
    with httpx.Client(base_url=idle_api.url, timeout=30) as client:
        file_id = upload(client, DATASET).json()["id"]
        job = create_job(client, file_id)  # no worker on idle_api: it stays queued
    browser.get(f"{idle_api.url}/dashboard/")
    row = f'#jobs-table tr[data-job-id="{job["id"]}"]'
    wait(browser, lambda d: css(d, row), 20, "the job's row")
    cells = css(browser, f"{row} td")
    assert "queued" in cells[1].text and "dpo" in cells[2].text and "tiny-random-llama" in cells[3].text
    css(browser, '#status-filter [data-filter="succeeded"]')[0].click()
    wait(browser, lambda d: not css(d, row), 10, "the row filtered out")
    css(browser, '#status-filter [data-filter="queued"]')[0].click()
    wait(browser, lambda d: css(d, row), 10, "the row back")
    css(browser, row)[0].click()
    wait(browser, lambda d: d.current_url.endswith(f"#/jobs/{job['id']}") and css(d, "#method-json"), 10,
         "the job page")


def test_upload_errors_at_their_lines_then_start_a_job(idle_api, browser, tmp_path):
    good = preference_line("hi", "a", "b")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n" + '{"input": {"messages": [}\n'
                   + json.dumps(good) + "\n")
    with httpx.Client(base_url=idle_api.url, timeout=30) as client:
        refused = upload(client, bad.read_bytes()).json()["error"]
    assert refused["issues"][0]["line"] == 3

    browser.get(f"{idle_api.url}/dashboard/#/new")
    wait(browser, lambda d: css(d, "#model option"), 20, "the model list")
    assert "tiny-random-llama" in read(browser, "#model option", "value")
    css(browser, "#upload-file")[0].send_keys(str(bad))
    css(browser, "#upload-button")[0].click()
    wait(browser, lambda d: css(d, '.line-error[data-line="3"]'), 20, "the line-3 error")
    message = css(browser, '.line-error[data-line="3"]')[0].text
    assert "Line 3" in message and refused["issues"][0]["message"] in message
    assert css(browser, '.src .ln.bad[data-line="3"]')[0].text.startswith("3")

    # A good file uploads, is selected, and a job starts from the form.
    good_file = tmp_path / "good.jsonl"
    good_file.write_bytes(DATASET)
    css(browser, "#upload-file")[0].send_keys(str(good_file))
    css(browser, "#upload-button")[0].click()
    wait(browser, lambda d: css(d, "#upload-ok"), 20, "the upload confirmation")
    css(browser, "#model")[0].send_keys("tiny-random-llama")
    css(browser, "#create-button")[0].click()
    wait(browser, lambda d: "#/jobs/ftjob" in d.current_url, 20, "the new job's page")
    job_id = browser.current_url.rsplit("/", 1)[1]
    with httpx.Client(base_url=idle_api.url, timeout=30) as client:
        created = client.get(f"/v1/fine_tuning/jobs/{job_id}").json()
    assert created["model"] == "tiny-random-llama" and created["method"]["type"] == "dpo"


def test_asks_for_the_key_when_the_service_requires_one(start_api, make_database, tmp_path_factory, browser):
    from tests.integration.tenants import make_tenant, own_server

    server = own_server(start_api, make_database, tmp_path_factory)
    tenant = make_tenant(server)
    with tenant.client(server) as client:
        file_id = upload(client, DATASET).json()["id"]
        job = create_job(client, file_id)
    assert httpx.get(f"{server.url}/dashboard/api/models").status_code == 401

    browser.get(f"{server.url}/dashboard/#/jobs")
    wait(browser, lambda d: d.execute_script("return document.getElementById('key-dialog').open"), 20, "the key dialog")
    css(browser, "#key-input")[0].send_keys(tenant.key)
    css(browser, "#key-save")[0].click()
    wait(browser, lambda d: css(d, f'#jobs-table tr[data-job-id="{job["id"]}"]'), 20, "the tenant's job")
    assert browser.execute_script("return localStorage.getItem('rlhf.apiKey')") == tenant.key
    # The live stream carries the key too (fetch, not EventSource).
    browser.get(f"{server.url}/dashboard/#/jobs/{job['id']}")
    wait(browser, lambda d: int(first(d, "#event-log", "data-count") or 0) >= 2, 20, "streamed events")
