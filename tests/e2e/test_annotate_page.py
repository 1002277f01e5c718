"""Drive the built-in annotation page (`/annotate`) in real headless Chromium (Debian's `chromium`,
through Playwright): judge one pair by keyboard and one by click, skip a third, then check through
the API that both judgments landed with the right outcome and the skipped pair was handed back.
FLYWHEEL_ANNOTATE_KEY is an `annotate`-only key."""

import json
import os
import re
import secrets
import shutil
import urllib.request
from datetime import datetime, timezone

import pytest

playwright = pytest.importorskip("playwright.sync_api")

BASE = os.environ["FLYWHEEL_URL"]
ADMIN_KEY = os.environ["FLYWHEEL_API_KEY"]
ANNOTATE_KEY = os.environ["FLYWHEEL_ANNOTATE_KEY"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def api(path, body=None):
    request = urllib.request.Request(
        BASE + path,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read())


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="no chromium installed")
def test_the_annotation_page_records_judgments_by_keyboard_and_by_click():
    assert CHROMIUM, "CI needs Debian's chromium (.ci/run installs it)"
    for prompt in ("Name a river.", "Name a mountain.", "Name a lake."):
        api("/v1/chat/completions", {"messages": [{"role": "user", "content": prompt}], "n": 2, "max_tokens": 8})
    annotator = "page-" + secrets.token_hex(4)

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(f"{BASE}/annotate")
        page.fill("#key", ANNOTATE_KEY)
        page.fill("#annotator", annotator)
        page.click("button[type=submit]")
        page.wait_for_selector("#work:not([hidden])")
        first = page.evaluate("item")
        assert page.inner_text("#left") == first["left"]["text"]
        page.keyboard.press("1")
        # The counts refresh after the next pair is shown.
        page.wait_for_function("document.getElementById('status').textContent.includes('1 this session')")
        second = page.evaluate("item")
        page.fill("#rationale", "clearer")
        page.click("#judge-b")
        page.wait_for_function("document.getElementById('status').textContent.includes('2 this session')")
        status = page.inner_text("#status")
        third = page.evaluate("item")
        page.keyboard.press("5")
        page.wait_for_function(f"item === null || item.assignment_id !== '{third['assignment_id']}'")
        after_skip = page.inner_text("#status")
        browser.close()

    mine = api(f"/v1/judgments?annotator={annotator}")["data"]
    assert [j["outcome"] for j in mine] == ["b", "a"]  # newest first
    by_click, by_key = mine
    assert by_key["response_a"] == first["left"]["response_id"]
    assert by_key["response_b"] == first["right"]["response_id"]
    assert by_click["response_a"] == second["left"]["response_id"]
    assert by_click["rationale"] == "clearer"
    assert by_key["source"] == "human"
    assert "2 this session" in status
    assert "2 this session" in after_skip, "a skip posts no judgment"
    # Released by the page: releasing again changes nothing and shows the reservation ended.
    released = api(f"/v1/annotation/assignments/{third['assignment_id']}/release", {})
    assert released["judgment_id"] is None
    # The store writes nanoseconds; Python reads at most microseconds.
    stamp = re.sub(r"(\.\d{6})\d+", r"\1", released["expires_at"]).replace("Z", "+00:00")
    ended = datetime.fromisoformat(stamp)
    assert ended <= datetime.now(timezone.utc)
