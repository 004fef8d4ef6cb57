"""The review page in a real browser (headless Chromium) against a real broker.

Skipped, with the reason, only where the system chromedriver is missing; ``.ci/run``
installs Debian's ``chromium`` and ``chromium-driver``. Never downloads a browser.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from consumer.config.settings import ServeSettings, ServeUser, Settings
from consumer.dev.simulator import DownstreamSimulator, FailurePlan, TransientKind
from consumer.kafka.admin_session import ensure_topics_logged
from consumer.web.app import build_app
from consumer.web.auth import hash_password
from consumer.web.source import KafkaReviewSource
from tests.integration.harness import (
    new_event,
    produce,
    read_topic,
    running_consumer,
    settings_for,
    wait_until,
    write_config,
)

CHROMEDRIVER = "/usr/bin/chromedriver"
PASSWORD = "review-page-test-password"
ROOT = Path(__file__).resolve().parents[2]
#: Where the list page's screenshot is kept after the run (ignored by git); set
#: CLINIC_EVENTS_SCREENSHOT_TO to also write it elsewhere (docs/review-page.png).
ARTIFACTS = ROOT / "artifacts"

pytestmark = pytest.mark.skipif(
    not (os.access(CHROMEDRIVER, os.X_OK) and shutil.which("chromium")),
    reason=f"needs Debian's chromium and chromium-driver ({CHROMEDRIVER}); "
           "apt-get install chromium chromium-driver (.ci/run does)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(shutil.which("chromium"))
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1400,900",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    # A form's POST answers with a redirect the browser may still be following when the
    # next lookup runs: every lookup polls for its element, up to this deadline.
    driver.implicitly_wait(15)
    try:
        yield driver
    finally:
        driver.quit()


@dataclasses.dataclass
class _Page:
    url: str


@contextmanager
def _serve(settings: Settings) -> Iterator[_Page]:
    port = _free_port()
    serve = ServeSettings(port=port, users=(
        ServeUser(name="ana", password_hash=hash_password(PASSWORD), role="operator"),))
    app = build_app(serve, KafkaReviewSource(settings), secret="x" * 40)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, name="review-page", daemon=True)
    thread.start()
    assert wait_until(lambda: server.started, 20), "the review page did not start"
    try:
        yield _Page(f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(20)


def _screenshot(browser: webdriver.Chrome, tmp_path: Path) -> None:
    shot = tmp_path / "review-list.png"
    assert browser.save_screenshot(str(shot))
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / "review-list.png")
    if target := os.environ.get("CLINIC_EVENTS_SCREENSHOT_TO"):
        shutil.copyfile(shot, target)


def test_sign_in_review_masked_and_replay_a_group_that_reaches_the_downstream(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path,
        browser: webdriver.Chrome) -> None:
    """An operator signs in, sees the dead letters grouped in plain words, opens one with
    PHI masked, replays the 422 group, sees it leave the list, and the downstream gets it."""
    rejected = [new_event("intake.submitted") for _ in range(3)]
    gave_up = [new_event("appointment.scheduled") for _ in range(2)]
    plan = FailurePlan(permanent_keys=frozenset(str(e["event_id"]) for e in rejected),
                       always_fail_keys=frozenset(str(e["event_id"]) for e in gave_up),
                       transient_kinds=(TransientKind.UNAVAILABLE,))
    with DownstreamSimulator(plan) as broken:
        config = write_config(tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix,
                              url=broken.events_url, delays=("1s",))
        with running_consumer(settings_for(config)):
            produce(kafka_bootstrap, topic_prefix, [*rejected, *gave_up])
            assert len(read_topic(kafka_bootstrap, f"{topic_prefix}.dlq", 5, 60)) == 5

    with DownstreamSimulator() as healthy:
        config = write_config(tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix,
                              url=healthy.events_url, delays=("1s",))
        settings = settings_for(config)
        with running_consumer(settings), _serve(settings) as page:
            browser.get(f"{page.url}/")
            assert browser.current_url.endswith("/login")
            browser.find_element(By.ID, "name").send_keys("ana")
            browser.find_element(By.ID, "password").send_keys(PASSWORD)
            browser.find_element(By.ID, "sign-in").click()

            groups = browser.find_element(By.ID, "groups").text
            assert "EHR rejected the request: 422 Unprocessable Entity" in groups
            assert "gave up after 2 attempts: EHR unavailable (503)" in groups
            assert browser.find_element(By.ID, "status").text.split()[0] in (
                "OK", "WARN", "ERR", "STOP")
            _screenshot(browser, tmp_path)

            row = next(r for r in browser.find_elements(By.CSS_SELECTOR, "tr.group")
                       if "422" in r.text)
            row.find_element(By.LINK_TEXT, "records").click()
            browser.find_elements(By.CSS_SELECTOR, "a.record")[0].click()
            source = browser.page_source
            assert "intake.submitted" in source
            for phi in ("Maria", "Okafor", "MBR99887766", "+15551234567"):
                assert phi not in source
            assert "****" in source
            assert "?" not in browser.current_url  # coordinates only, no query

            browser.get(f"{page.url}/")
            row = next(r for r in browser.find_elements(By.CSS_SELECTOR, "tr.group")
                       if "422" in r.text)
            row.find_element(By.LINK_TEXT, "Replay…").click()
            assert browser.find_element(By.ID, "count").text == "3"
            assert browser.find_element(By.ID, "destination").text == topic_prefix
            browser.find_element(By.ID, "confirm").click()
            assert browser.find_element(By.ID, "result").text == "Replay: completed"

            browser.get(f"{page.url}/")
            groups = browser.find_element(By.ID, "groups").text
            assert "422" not in groups
            assert "EHR unavailable (503)" in groups
            wanted = {str(e["event_id"]) for e in rejected}
            assert healthy.wait_for(lambda: wanted <= set(healthy.delivered_keys()), 60)
            browser.get(f"{page.url}/audit")
            assert "ana (review page)" in browser.find_element(By.ID, "audit").text


def test_the_status_band_reads_the_lag_probe(kafka_bootstrap: str, topic_prefix: str,
                                             tmp_path: Path) -> None:
    """The Kafka source's status band is a lag sample: a DLQ topic that exists and is empty
    and a group with no lag give a status and zero overdue retries."""
    config = write_config(tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix)
    settings = settings_for(config)
    ensure_topics_logged(settings)
    band = KafkaReviewSource(settings).status()
    assert band is not None
    assert band.status in ("OK", "WARN")
    assert band.overdue == 0
    assert band.taken_at_ms <= time.time() * 1000 + 1000
