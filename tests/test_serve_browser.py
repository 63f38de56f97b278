"""The serve page end to end: a real server (uvicorn in a thread) driven by headless Chromium.

Uses Debian's Chromium through Playwright's sync API; skipped when ``/usr/bin/chromium`` is
absent (``make browser`` installs it). The model is the hand-set band-detector of
:mod:`acalign.infer.synthetic` (exported and loaded like a trained one) and the index is a real
one built over the generated clips, so answers are known: "dog" sounds sit in known places.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from acalign.serve import ServeSettings, create_app
from test_serve_fakes import DOG, make_library, real_model_and_index, scene_clip

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
MAX_UPLOAD_MB = 0.5
TIMEOUT_MS = 15_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: run `make browser` (Debian's chromium)"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("serve_browser")
    make_library(base / "root")
    uploads = base / "uploads"
    return {
        "base": base,
        "root": base / "root",
        "upload": scene_clip(uploads / "my_recording.wav", [("dog", 1.5, 2.5)], seconds=4.0),
        "large": scene_clip(uploads / "too_long.wav", [], seconds=10.0),  # 0.64 MB of 16-bit PCM
        "text": _write(uploads / "notes.txt", b"not audio, just words\n" * 50),
    }


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def server(files: dict[str, Path]) -> Iterator[str]:
    import uvicorn

    model, index = real_model_and_index(files["root"], files["base"] / "work")
    settings = ServeSettings(max_upload_mb=MAX_UPLOAD_MB, model_name="band-detector")
    app = create_app(model, index, data_dir=files["root"] / "corpus", settings=settings)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start within 10 s")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium_profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        context.set_default_timeout(TIMEOUT_MS)
        yield context
        context.close()


@pytest.fixture
def page(browser_context, server: str):  # noqa: ANN001, ANN201 - playwright types stay optional
    page = browser_context.new_page()
    page.goto(server + "/")
    page.wait_for_selector("body[data-ready='1']")
    yield page
    page.close()


def _canvas_ink(page) -> int:  # noqa: ANN001
    """How many pixels of the plot canvas are not transparent."""
    return page.evaluate(
        """() => {
            const c = document.getElementById('plot');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 3; i < d.length; i += 4) if (d[i]) n++;
            return n;
        }"""
    )


def test_upload_ground_shows_plot_segments_and_plays(page, files: dict[str, Path]) -> None:  # noqa: ANN001
    page.set_input_files("#upload-input", str(files["upload"]))
    assert "my_recording.wav" in page.inner_text("#current-clip")
    page.fill("#phrases", "a dog barks, birds sing")
    page.click("#ground-button")
    page.wait_for_selector("#plot[data-phrases='2']")
    assert _canvas_ink(page) > 10_000
    rows = page.locator("#segments tr.segment-row")
    assert rows.count() == 1  # the dog; no bird in this clip
    assert "no segment" in page.inner_text("#segments tr.no-segment")
    first = rows.first
    assert abs(float(first.get_attribute("data-onset")) - 1.5) < 0.1
    assert abs(float(first.get_attribute("data-offset")) - 2.5) < 0.1
    assert page.is_hidden("#message")
    # play just that segment: playback starts at the onset and stops at the offset
    first.locator("button").click()
    page.wait_for_function("() => !document.getElementById('player').paused", timeout=5000)
    page.wait_for_function("() => document.getElementById('player').paused", timeout=5000)
    assert 2.4 <= page.evaluate("document.getElementById('player').currentTime") <= 2.8
    # the cursor is drawn where playback stopped
    assert _cursor_ink(page) > 50
    # clicking the segment on the plot plays it too
    box = page.evaluate("() => state.hitboxes[0]")
    plot = page.locator("#overlay").bounding_box()
    page.mouse.click(plot["x"] + (box["x0"] + box["x1"]) / 2, plot["y"] + (box["y0"] + box["y1"]) / 2)
    page.wait_for_function("() => !document.getElementById('player').paused", timeout=5000)
    assert 1.4 <= page.evaluate("document.getElementById('player').currentTime") <= 2.6


def _cursor_ink(page) -> int:  # noqa: ANN001
    """Painted pixels of the overlay in a 3-px column at the player's current time."""
    return page.evaluate(
        """() => {
            const c = document.getElementById('overlay');
            const ratio = window.devicePixelRatio || 1;
            const x = Math.round(timeToX(document.getElementById('player').currentTime, c.width / ratio) * ratio);
            const d = c.getContext('2d').getImageData(x - 1, 0, 3, c.height).data;
            let n = 0;
            for (let i = 3; i < d.length; i += 4) if (d[i]) n++;
            return n;
        }"""
    )


def test_corpus_clip_shows_captions_and_ground_truth(page) -> None:  # noqa: ANN001
    page.fill("#clip-filter", "twice")  # matches a caption, not a name
    page.wait_for_function("() => document.querySelectorAll('#clip-list li').length === 1")
    page.click("#clip-list li")
    page.wait_for_selector("#reference-panel:not([hidden]) .chip")
    assert "a dog barks twice" in page.inner_text("#captions")
    assert page.input_value("#phrases") == "a dog barks"  # prefilled from the caption
    page.click("#ground-button")
    page.wait_for_selector("#plot[data-phrases='1']")
    result = page.evaluate("() => state.result.phrases[0]")
    assert result["reference"] == [{"onset": 1.0, "offset": 2.0, "score": None}]
    assert page.evaluate("() => document.getElementById('player').src").endswith("/api/audio/" + DOG)


def test_search_results_are_playable(page, server: str) -> None:  # noqa: ANN001
    page.fill("#search-input", "a dog barks")
    page.click("#search-form button")
    page.wait_for_selector(".search-hit audio")
    hits = page.locator(".search-hit")
    assert hits.count() == 4
    assert hits.first.get_attribute("data-id") == DOG
    src = hits.first.locator("audio").get_attribute("src")
    onset, offset = (float(t) for t in src.split("#t=")[1].split(","))
    assert onset <= 1.2 and offset >= 1.8  # the dog barks from 1.0 to 2.0 s
    # the page's own origin serves it whole (no-store: the player may already hold a range of it)
    status = page.evaluate("async (src) => (await fetch(src, {cache: 'no-store'})).status", src)
    assert status == 200
    # the browser itself can load and decode what the player points at
    duration = page.evaluate(
        """() => new Promise((resolve, reject) => {
            const a = document.querySelector('.search-hit audio');
            a.onloadedmetadata = () => resolve(a.duration);
            a.onerror = () => reject(new Error('audio failed to load'));
            a.preload = 'metadata';
            a.load();
        })"""
    )
    assert duration == pytest.approx(3.0, abs=0.05)


def test_bad_uploads_show_the_error(page, files: dict[str, Path]) -> None:  # noqa: ANN001
    page.fill("#phrases", "a dog barks")
    page.set_input_files("#upload-input", str(files["text"]))
    page.click("#ground-button")
    page.wait_for_selector("#message:not([hidden])")
    assert "not a decodable audio file" in page.inner_text("#message")

    page.set_input_files("#upload-input", str(files["large"]))
    page.wait_for_selector("#message", state="hidden")
    page.click("#ground-button")
    page.wait_for_selector("#message:not([hidden])")
    message = page.inner_text("#message")
    # the server's 413 answer ("upload too large (0.6 MB): ..."), or the page's own wording of
    # it if the browser saw the refused upload as a dropped connection
    assert "upload too large" in message and f"{MAX_UPLOAD_MB} MB" in message
    assert page.is_hidden("#result")
