"""End to end in a real browser: headless Chromium (Debian package) driven by Playwright."""

from __future__ import annotations

import httpx
import pytest
from conftest import EXAMPLES, require_binary, require_module

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]


@pytest.fixture(scope="module")
def browser():
    chromium = require_binary("chromium", "browser tests")
    sync_playwright = require_module("playwright.sync_api", "browser tests").sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_upload_photo_shows_emotion(browser, live_server, tmp_path):
    photo = EXAMPLES / "group.jpg"
    api = httpx.post(f"{live_server}/predict", files={"file": photo.open("rb")}, timeout=30).json()
    external = []
    page = browser.new_page()
    page.on(
        "request",
        lambda r: (
            external.append(r.url) if "127.0.0.1" not in r.url and not r.url.startswith(("data:", "blob:")) else None
        ),
    )
    page.goto(f"{live_server}/", wait_until="domcontentloaded", timeout=60_000)
    assert page.url.rstrip("/").endswith("/ui")
    page.get_by_text("fer-resnet18").first.wait_for(timeout=30_000)  # model name/version shown
    page.locator("#photo input[type=file]").set_input_files(str(photo))
    page.locator("#summary").get_by_text("3 faces").wait_for(timeout=60_000)
    probs = page.locator("#probabilities")
    probs.get_by_text(api["emotion"]).first.wait_for(timeout=10_000)
    # The dropdown offers one entry per face, in the API's order.
    page.locator("#face input").click()
    options = page.get_by_role("option")
    options.first.wait_for(timeout=10_000)
    texts = options.all_inner_texts()
    assert [t.split(":")[1].split("(")[0].strip() for t in texts] == [f["emotion"] for f in api["faces"]]
    page.screenshot(path=str(tmp_path / "upload.png"), full_page=True)
    assert page.locator("#annotated img").count() == 1
    assert external == []  # everything is served locally (no CDN, no telemetry)
    page.close()


def test_webcam_streams_predictions(browser, live_server):
    context = browser.new_context(permissions=["camera"])
    page = context.new_page()
    page.goto(f"{live_server}/ui/", wait_until="domcontentloaded", timeout=60_000)
    page.get_by_role("tab", name="Webcam").click()
    cam = page.locator("#cam")
    cam.wait_for(timeout=10_000)
    # Chromium's fake camera (a test pattern): grant access, then start streaming.
    cam.get_by_text("Click to Access Webcam").click(timeout=15_000)
    cam.get_by_label("capture photo").click(timeout=15_000)
    # The annotated frame comes back from the server while streaming.
    frame = page.locator("#cam-annotated img")
    frame.wait_for(timeout=45_000)
    assert (frame.get_attribute("src") or "").strip()
    context.close()


def _offline_page(browser):
    """A page whose requests to anything but this machine are blocked (as without internet)."""
    context = browser.new_context()
    blocked = []

    def route(r):
        if r.request.url.startswith(("http://127.0.0.1", "data:", "blob:")):
            return r.continue_()
        blocked.append(r.request.url)
        return r.abort()

    context.route("**/*", route)
    return context, context.new_page(), blocked


def test_api_docs_work_offline(browser, live_server):
    context, page, blocked = _offline_page(browser)
    page.goto(f"{live_server}/docs", wait_until="domcontentloaded", timeout=60_000)
    paths = page.locator(".opblock-summary-path")
    paths.first.wait_for(timeout=30_000)
    shown = {p.strip() for p in paths.all_inner_texts()}
    assert {"/predict", "/health", "/ready", "/model", "/metrics", "/admin/reload"} <= shown
    page.get_by_text("Emotion of every face in a photo").first.wait_for(timeout=30_000)
    page.wait_for_load_state("networkidle", timeout=30_000)  # every asset the page asks for, asked
    assert blocked == []  # nothing was even asked of the internet
    context.close()


def test_an_example_shows_and_is_analysed_at_once_and_faces_can_be_picked(browser, live_server):
    context, page, blocked = _offline_page(browser)
    failed = []
    page.on("response", lambda r: failed.append((r.status, r.url)) if r.status >= 400 else None)
    page.goto(f"{live_server}/ui/", wait_until="domcontentloaded", timeout=60_000)
    page.get_by_text("fer-resnet18").first.wait_for(timeout=30_000)
    examples = page.locator("#examples .gallery-item")
    examples.first.wait_for(timeout=30_000)
    assert examples.count() == 3  # astronaut, grace_hopper, group (sorted)
    examples.nth(2).click()
    # No "Detect emotions" press: the click alone fills the photo and analyses it.
    page.locator("#summary").get_by_text("3 faces").wait_for(timeout=60_000)
    page.locator("#photo img").first.wait_for(timeout=10_000)
    annotated = page.locator("#annotated img").first
    before = annotated.get_attribute("src")
    page.locator("#face input").click()
    page.get_by_role("option").nth(1).click()
    # Picking face 2 redraws the photo with that face highlighted.
    page.wait_for_function(
        "(before) => { const i = document.querySelector('#annotated img'); return i && i.src && i.src !== before; }",
        arg=before,
        timeout=30_000,
    )
    assert failed == [] and blocked == []
    context.close()


def test_video_tab_tracks_faces_and_plots_them(browser, live_server, tmp_path):
    import videos

    clip = videos.cut(tmp_path / "cut.webm")
    context, page, blocked = _offline_page(browser)
    page.goto(f"{live_server}/ui/", wait_until="domcontentloaded", timeout=60_000)
    page.get_by_role("tab", name="Video").click()
    page.locator("#video input[type=file]").set_input_files(str(clip))
    page.locator("#run-video").click()
    summary = page.locator("#video-summary")
    summary.get_by_text("2 faces").wait_for(timeout=120_000)
    assert "#1: mostly happy" in summary.inner_text() and "#2" in summary.inner_text()
    video = page.locator("#video-annotated video")
    video.wait_for(timeout=30_000)
    assert (video.get_attribute("src") or "").endswith(".webm")
    page.locator("#video-plot").get_by_text("#1 happy").first.wait_for(state="attached", timeout=30_000)
    page.screenshot(path=str(tmp_path / "video.png"), full_page=True)
    assert page.get_by_text("Video not playable").count() == 0
    assert blocked == []
    context.close()


def test_a_face_can_be_corrected_from_the_ui(browser, tmp_path):
    import json

    from conftest import app_process

    with app_process(tmp_path, FER_FEEDBACK_DIR=str(tmp_path / "feedback")) as url:
        page = browser.new_page()
        # Every action waits up to 90 s, not Playwright's 30: on a busy 2-core runner Gradio's
        # front end took longer than 30 s to render the upload box of a freshly started app.
        page.set_default_timeout(90_000)
        page.goto(f"{url}/ui/", wait_until="domcontentloaded", timeout=60_000)
        page.get_by_text("fer-resnet18").first.wait_for()  # the UI has rendered (model name shown)
        page.locator("#photo input[type=file]").set_input_files(str(EXAMPLES / "group.jpg"))
        page.locator("#summary").get_by_text("3 faces").wait_for(timeout=60_000)
        page.locator("#face input").click()
        page.get_by_role("option").nth(1).click()
        page.locator("#correct input").click()
        page.get_by_role("option", name="surprise", exact=True).click()
        page.locator("#send-feedback").click()
        page.locator("#feedback-msg").get_by_text("Thank you: face 2").wait_for(timeout=30_000)
        page.close()
    (record,) = [json.loads(line) for line in (tmp_path / "feedback" / "feedback.jsonl").read_text().splitlines()]
    assert record["face"] == 1 and record["label"] == "surprise"
    assert (tmp_path / "feedback" / "crops" / record["crop"]).is_file()
