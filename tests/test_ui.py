"""The web studio at /ui, driven in headless Chromium (Debian's, never a downloaded browser)
against the live server: speech that plays as it streams, a voice made by upload and by the
microphone, a dialogue with its turns marked, a job's live progress, the history, a character that
answers aloud, the engines. These are ``slow`` and ``model``; the files the studio is made of are
checked on the module's mock app.

Every wait is on a condition in the page; screenshots of each view go to .cache/screenshots/.
"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveServer, someone_saying

pytest.importorskip("playwright.sync_api", reason="needs the test extras (playwright)")
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # A microphone that "says" a recording, so the MediaRecorder path runs for real.
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]
SCREENSHOTS = Path(__file__).resolve().parent.parent / ".cache" / "screenshots"
VIEWS = ("speak", "voices", "dialogue", "history", "jobs", "characters", "status")
TIMEOUT_MS = 60_000
RECORDING = "Good morning. I am reading a few words into the microphone for my new voice."

needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium (scripts/system-packages.sh installs it)"
)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    microphone = tmp_path_factory.mktemp("mic") / "speech.wav"
    microphone.write_bytes(someone_saying(RECORDING))
    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=CHROMIUM, args=[*ARGS, f"--use-file-for-fake-audio-capture={microphone}"]
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, server: LiveServer) -> Iterator[Page]:
    """A fresh tab on the studio; fails the test on any JavaScript error or console error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))

    def console(message: ConsoleMessage) -> None:
        # A failed request's console line is expected where a test provokes an API error.
        if message.type == "error" and "Failed to load resource" not in message.text:
            problems.append(f"console error: {message.text}")

    tab.on("console", console)
    tab.goto(f"{server.url}/ui/")
    yield tab
    context.close()
    assert not problems, problems


def open_view(page: Page, name: str) -> None:
    page.get_by_role("link", name=name.capitalize(), exact=True).click()
    expect(page.locator(f"#view-{name}")).to_be_visible()


def shot(page: Page, name: str) -> None:
    """A screenshot for people to look at, in .cache/screenshots/ (ignored by git)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")  # else the sticky header lands mid-page
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def player_result(page: Page, selector: str) -> dict[str, float]:
    player = page.locator(selector)
    expect(player).to_have_attribute("data-state", "done", timeout=TIMEOUT_MS)
    values: dict[str, float] = page.eval_on_selector(
        selector,
        """el => {
            const canvas = el.querySelector('canvas');
            const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            let drawn = 0;
            for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) drawn++;
            return {bytes: Number(el.dataset.bytes), duration: Number(el.dataset.duration),
                    drawn, width: canvas.width, first: Number(el.dataset.firstAudioMs ?? -1)};
        }""",
    )
    return values


# -- the page itself --------------------------------------------------------------------------


async def test_ui_redirects_and_serves_only_its_own_files(api: httpx.AsyncClient) -> None:
    redirect = await api.get("/ui", follow_redirects=False)
    assert redirect.status_code == 307 and redirect.headers["location"].endswith("ui/")
    index = await api.get("/ui/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert 'type="module"' in index.text
    assert not re.search(r'(?:src|href)="(?:https?:)?//', index.text)  # nothing from elsewhere: works offline
    script = await api.get("/ui/js/app.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert (await api.get("/ui/js/nothing.js")).status_code == 404
    assert (await api.get("/ui/%2e%2e/__init__.py")).status_code == 404
    assert (await api.get("/ui/..%2f..%2fapp.py")).status_code == 404
    assert (await api.get("/ui/%00")).status_code == 404


# -- speak ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["mp3", "pcm"])
@pytest.mark.model
@pytest.mark.slow
@needs_chromium
def test_speech_plays_while_it_streams_and_its_waveform_is_drawn(page: Page, client: httpx.Client, fmt: str) -> None:
    text = f"The studio speaks this sentence in {fmt} format. It arrives in pieces and plays at once."
    page.get_by_label("Text", exact=True).fill(text)
    page.get_by_label("Voice").select_option("joe")
    page.get_by_label("Format").select_option(fmt)
    page.get_by_role("button", name="Generate").click()
    result = player_result(page, "#speak-output .player")
    assert result["bytes"] > 1000 and result["first"] >= 0
    assert result["drawn"] > result["width"]  # more than the centre line: the waveform is there
    generation_id = page.locator("#speak-output .player").get_attribute("data-generation-id")
    generation = client.get(f"/v1/history/{generation_id}").json()
    # What the browser decoded is what the server made (MP3 adds a frame or two of padding).
    assert generation["text"] == text and generation["format"] == fmt
    assert abs(result["duration"] - generation["duration_s"]) < 0.15
    download = page.get_by_role("link", name=re.compile("^Download"))
    expect(download).to_have_attribute("download", "speech.wav" if fmt == "pcm" else "speech.mp3")
    shot(page, f"speak-result-{fmt}")


@pytest.mark.model
@pytest.mark.slow
@needs_chromium
def test_the_server_error_detail_is_shown(page: Page) -> None:
    page.get_by_label("Text", exact=True).fill("Out of range.")
    page.get_by_label("Engine").select_option("piper")
    page.locator("#speak-more summary").click()
    page.get_by_label(re.compile("^noise_scale")).fill("7")
    page.get_by_role("button", name="Generate").click()
    error = page.locator("#speak-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("noise_scale")
    expect(error).to_contain_text("HTTP 4")
    expect(page.locator("#speak-output .player")).to_have_attribute("data-state", "error")
    shot(page, "speak-error")


# -- voices -----------------------------------------------------------------------------------


@pytest.mark.model
@pytest.mark.slow
@needs_chromium
def test_a_voice_is_made_by_upload_and_by_microphone_edited_exported_and_imported(page: Page) -> None:
    name = f"Ada {uuid.uuid4().hex[:6]}"
    open_view(page, "voices")
    page.get_by_label("Name", exact=True).first.fill(name)
    page.get_by_role("button", name="Create voice").click()
    expect(page.locator("#voice-detail-title")).to_have_text(name)

    # A recording, uploaded as a file: checked, transcribed by Whisper, reported.
    recording = someone_saying("Hello, this is my voice for the studio.")
    page.locator("#sample-file").set_input_files({"name": "ada.wav", "mimeType": "audio/wav", "buffer": recording})
    page.get_by_role("button", name="Upload sample").click()
    sample = page.locator("#sample-list li.sample").first
    expect(sample).to_be_visible()
    expect(sample.locator("textarea")).to_have_value(re.compile("voice", re.IGNORECASE))
    expect(sample.locator("details.report dl")).to_contain_text("Signal to noise")

    # The transcript is editable.
    sample.locator("textarea").fill("Hello, this is my voice for the studio.")
    sample.get_by_role("button", name="Save transcript").click()
    expect(sample).to_contain_text("written by you")

    # A second sample from the microphone (Chromium's fake device plays a recording).
    page.get_by_role("button", name="Record from microphone").click()
    expect(page.locator("#sample-add")).to_contain_text(re.compile(r"Recording… [2-9]\.\d s"))
    page.get_by_role("button", name="Stop recording").click()
    page.get_by_role("button", name="Upload recording").click()
    expect(page.locator("#sample-list li.sample")).to_have_count(2)
    expect(page.locator("#sample-list li.sample").nth(1).locator("textarea")).to_have_value(
        re.compile("microphone|voice|morning", re.IGNORECASE)
    )

    # Rename, export, import under another name.
    page.locator("#voice-edit-name").fill(f"{name} B")
    page.locator("#voice-edit").get_by_role("button", name="Save").click()
    expect(page.locator("#voice-detail-title")).to_have_text(f"{name} B")
    with page.expect_download() as exported:
        page.get_by_role("link", name="Export").click()
    archive = exported.value.path()
    page.locator("#voice-import-file").set_input_files(str(archive))
    page.locator("#voice-import-name").fill(f"{name} C")
    page.get_by_role("button", name="Import").click()
    expect(page.locator("#voice-detail-title")).to_have_text(f"{name} C")
    expect(page.locator("#sample-list li.sample")).to_have_count(2)
    shot(page, "voices-detail")

    # The new voices are offered by the Speak view.
    open_view(page, "speak")
    expect(page.locator("#speak-voice optgroup[label=Library] option", has_text=f"{name} C")).to_be_enabled()


# -- dialogue ---------------------------------------------------------------------------------


@pytest.mark.model
@pytest.mark.slow
@needs_chromium
def test_a_dialogue_is_spoken_and_the_current_turn_marked(page: Page) -> None:
    open_view(page, "dialogue")
    page.locator("#turn-1-voice").select_option("joe")
    page.locator("#turn-1-text").fill("Where did you put the map?")
    page.locator("#turn-2-voice").select_option("alloy")
    page.locator("#turn-2-text").fill("It is in the car.")
    page.get_by_role("button", name="Add a turn").click()
    page.locator("#turn-3-text").fill("Let us go then.")
    page.get_by_role("button", name="Move turn 3 up").click()  # now second
    expect(page.locator("#turn-2-text")).to_have_value("Let us go then.")
    page.locator("#dialogue-engine").select_option("piper")
    page.get_by_role("button", name="Generate dialogue").click()
    result = player_result(page, "#dialogue-output .player")
    assert result["duration"] > 1.5
    turns = page.locator("#dialogue-script li")
    expect(turns).to_have_count(3)
    expect(turns.nth(1)).to_contain_text("Let us go then.")
    # Jump into the third turn: it is the one marked.
    page.get_by_role("button", name="Play from turn 3").click()
    expect(turns.nth(2)).to_have_attribute("aria-current", "true")
    expect(turns.nth(0)).not_to_have_attribute("aria-current", "true")
    shot(page, "dialogue-result")


# -- jobs -------------------------------------------------------------------------------------


@pytest.mark.model
@pytest.mark.slow
@needs_chromium
def test_a_job_shows_its_progress_live_and_another_is_cancelled(page: Page) -> None:
    frames: list[str] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(str(payload))))
    open_view(page, "jobs")
    # Long enough to be unfinished when the queueing answer comes back, even on a loaded machine
    # (four sentences once finished first, and the page had no live job to follow).
    sentences = " ".join(f"This is sentence number {n} of the background job." for n in range(1, 13))
    page.locator("#job-text").fill(sentences)
    page.locator("#job-voice").select_option("joe")
    page.get_by_role("button", name="Queue job").click()
    job = page.locator("#job-list li.job").first
    expect(job).to_have_attribute("data-status", "completed", timeout=TIMEOUT_MS)
    expect(job.locator("progress")).to_have_attribute("value", "100")
    expect(job.locator("audio")).to_be_visible()

    page.locator("#job-text").fill(" ".join(f"Sentence {n} of a very long text." for n in range(60)))
    page.get_by_role("button", name="Queue job").click()
    long_job = page.locator("#job-list li.job").first
    # Its bar moves as sentences are done (60 of them: far from the end when it is cancelled), from
    # the job's WebSocket. (The short job above may be done before the queueing answer reaches a
    # loaded machine's page, which then has nothing live to follow: its frames are not asserted.)
    expect(long_job).to_have_attribute("data-progress", re.compile(r"^0\.\d*[1-9]"), timeout=TIMEOUT_MS)
    expect(long_job.locator("progress")).not_to_have_attribute("value", "0")
    assert any('"status": "running"' in f or '"status":"running"' in f for f in frames), frames
    shot(page, "jobs-running")
    long_job.get_by_role("button", name=re.compile("^Cancel")).click()
    expect(long_job).to_have_attribute("data-status", "cancelled", timeout=TIMEOUT_MS)
    shot(page, "jobs-after")


# -- history ----------------------------------------------------------------------------------


@pytest.mark.model
@pytest.mark.slow
@needs_chromium
def test_the_history_searches_plays_and_deletes(page: Page, client: httpx.Client) -> None:
    word = f"zebra{uuid.uuid4().hex[:5]}"
    body = {"input": f"A {word} crossed.", "voice": "joe", "response_format": "wav"}
    made = client.post("/v1/audio/speech", json=body)
    assert made.status_code == 200
    open_view(page, "history")
    expect(page.locator("#history-total")).not_to_have_text("0")
    page.get_by_label("Search the text").fill(word)
    items = page.locator("#history-list li")
    expect(items).to_have_count(1)
    expect(page.locator("#history-count")).to_have_text("1–1 of 1 generation")
    items.first.get_by_role("button", name=re.compile("^Play")).click()
    expect(page.locator("#history-audio")).to_have_attribute("src", re.compile("/v1/history/.+/audio$"))
    page.once("dialog", lambda dialog: dialog.accept())
    items.first.get_by_role("button", name=re.compile("^Delete")).click()
    expect(page.locator("#history-count")).to_have_text("No generations match.")


@pytest.mark.model
@pytest.mark.slow
@needs_chromium
def test_the_history_shows_what_the_checks_heard_and_offers_captions(page: Page, client: httpx.Client) -> None:
    word = f"heron{uuid.uuid4().hex[:5]}"
    text = f"The {word} waited by the water. Then the tide came in."
    body = {"input": text, "voice": "joe", "response_format": "wav", "check": True, "timestamps": True}
    made = client.post("/v1/audio/speech", json=body)
    assert made.status_code == 200, made.text
    open_view(page, "history")
    page.get_by_label("Search the text").fill(word)
    item = page.locator("#history-list li")
    expect(item).to_have_count(1)
    expect(item.locator(".checks")).to_contain_text("Heard: 2 of 2 pieces")
    captions = item.get_by_role("link", name="Captions")
    expect(captions).to_have_attribute("href", re.compile(r"/captions\?format=srt$"))


# -- characters and status --------------------------------------------------------------------


@pytest.mark.model
@pytest.mark.slow
@needs_chromium
def test_a_character_is_created_answers_by_text_and_voice_and_is_renamed(page: Page) -> None:
    name = f"Guide {uuid.uuid4().hex[:6]}"
    open_view(page, "characters")
    page.locator("#character-name").fill(name)
    page.locator("#character-prompt").fill("You are a friendly museum guide. Answer in one short sentence.")
    page.locator("#character-voice").select_option("joe")
    page.get_by_text("Advanced settings (JSON)").click()
    page.locator("#character-llm-config").fill('{"max_tokens": 40, "temperature": 0.2}')  # a short answer
    page.get_by_role("button", name="Create character").click()
    card = page.locator("#character-list li", has_text=name)
    expect(card).to_be_visible()
    expect(page.locator("#chat-character")).to_have_value(card.get_attribute("data-character-id") or "")

    # The answer is written and spoken as it streams (server-sent events, PCM into WebAudio).
    page.locator("#chat-question").fill("What can I see here?")
    page.get_by_role("button", name="Send").click()
    answer = page.locator("#chat-log li.them").last
    expect(answer).not_to_have_attribute("aria-busy", "true", timeout=TIMEOUT_MS)
    expect(answer.locator(".answer-text")).not_to_be_empty()
    expect(answer.locator(".error")).to_have_count(0)
    expect(answer.locator("audio")).to_have_attribute("src", re.compile(r"\.wav$"))
    result = player_result(page, "#chat .player")
    assert result["duration"] > 0.3 and result["drawn"] > result["width"]
    shot(page, "characters-chat")

    card.get_by_role("button", name=f"Edit {name}").click()
    expect(page.locator("#character-name")).to_have_value(name)
    page.locator("#character-name").fill(f"{name} II")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#character-list li", has_text=f"{name} II")).to_be_visible()


@pytest.mark.model
@pytest.mark.slow
@needs_chromium
def test_the_status_view_loads_and_unloads_an_engine(page: Page) -> None:
    open_view(page, "status")
    expect(page.locator("tr[data-engine=piper]")).to_have_attribute("data-state", "loaded")
    row = page.locator("tr[data-engine=espeak]")
    # The live server is shared: an earlier test may have spoken with espeak (and so loaded it).
    expect(row).to_have_attribute("data-state", re.compile(r"^(not )?loaded$"))
    if row.get_attribute("data-state") == "loaded":
        row.get_by_role("button", name="Unload espeak", exact=True).click()
        expect(row).to_have_attribute("data-state", "not loaded")
    row.get_by_role("button", name="Load espeak", exact=True).click()
    expect(row).to_have_attribute("data-state", "loaded")
    page.locator("tr[data-engine=espeak]").get_by_role("button", name="Unload espeak", exact=True).click()
    expect(page.locator("tr[data-engine=espeak]")).to_have_attribute("data-state", "not loaded")


# -- how it looks -----------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height", "device"), [(1280, 900, "desktop"), (390, 844, "phone")])
@pytest.mark.model
@pytest.mark.slow
@needs_chromium
def test_screenshots_of_every_view(page: Page, width: int, height: int, device: str) -> None:
    """For people to look at (.cache/screenshots/); the test checks each view renders."""
    page.set_viewport_size({"width": width, "height": height})
    for view in VIEWS:
        page.goto(f"{page.url.split('#')[0]}#{view}")
        section = page.locator(f"#view-{view}")
        expect(section).to_be_visible()
        expect(section.locator("h2")).to_be_visible()
        # Settled: the view's data has arrived (no "Loading…" placeholders left).
        expect(section.get_by_text("Loading…")).to_have_count(0)
        shot(page, f"{view}-{device}")


# -- keys -------------------------------------------------------------------------------------


@pytest.mark.slow
@needs_chromium
def test_the_studio_asks_for_a_key_and_works_with_it(browser: Browser, tmp_path: Path) -> None:
    """With keys made, the studio's first call gets 401: it asks for a key, keeps it for the tab,
    and everything works with it, including what cannot send a header (the cookie)."""
    from parla.app import create_app
    from parla.services import Services
    from tests.conftest import mock_settings, serving

    services = Services.build(mock_settings(tmp_path / "data"))
    try:
        secret = services.keys.create("studio", "speak,voices")[1]
        with serving(create_app(services=services)) as url:
            context = browser.new_context()
            context.set_default_timeout(TIMEOUT_MS)
            tab = context.new_page()
            tab.goto(f"{url}/ui/")
            dialog = tab.locator("dialog.key-dialog")
            expect(dialog).to_be_visible()
            expect(dialog).to_contain_text("API key is needed")
            dialog.get_by_label("Key").fill(secret)
            dialog.get_by_role("button", name="Use this key").click()
            expect(dialog).to_have_count(0)
            tab.get_by_label("Text", exact=True).fill("The studio speaks with a key.")
            tab.get_by_role("button", name="Generate").click()
            expect(tab.locator("#speak-output .player")).to_have_attribute("data-state", "done")
            # The cookie carries the key where no header can go (an <audio src>, a download).
            status = tab.evaluate("fetch(new URL('../v1/history', document.baseURI)).then(r => r.status)")
            assert status == 200
            assert tab.evaluate("sessionStorage.getItem('parla.apiKey')") == secret
            shot(tab, "key-dialog-done")
            context.close()
    finally:
        services.close()


# -- speak: word timings ----------------------------------------------------------------------


@pytest.mark.model
@pytest.mark.slow
@needs_chromium
def test_speak_word_timings_show_each_word_and_link_its_captions(page: Page, client: httpx.Client) -> None:
    text = "The tide is out. The boats rest on the sand."
    expected = ["The", "tide", "is", "out", "The", "boats", "rest", "on", "the", "sand"]
    strip = page.locator("#speak-words")
    words = strip.locator("button.word")

    # Unticked, the request is as before and no words come.
    page.get_by_label("Text", exact=True).fill(text)
    page.get_by_label("Voice").select_option("joe")
    page.get_by_label("Format").select_option("wav")
    with page.expect_request(lambda r: r.url.endswith("/v1/audio/speech")) as plain:
        page.get_by_role("button", name="Generate").click()
    assert not {"timestamps", "stream_format"} & set(plain.value.post_data_json or {})
    expect(page.locator("#speak-output .player")).to_have_attribute("data-state", "done", timeout=TIMEOUT_MS)
    expect(words).to_have_count(0)
    expect(strip).to_be_hidden()
    expect(page.locator("#speak-captions")).to_be_hidden()

    # Ticked: the speech plays as it streams, the words arrive with it. (Which words are marked is
    # recorded in the page: on a loaded machine the playback may be over before a check could look.)
    page.evaluate(
        """() => {
            window.marked = [];
            new MutationObserver((changes) => {
                for (const c of changes) if (c.target.classList.contains('current'))
                    window.marked.push([c.target.textContent, c.target.getAttribute('aria-current')]);
            }).observe(document.querySelector('#speak-words'), {subtree: true, attributeFilter: ['class']});
        }"""
    )
    page.get_by_label("Word timings").check()
    with page.expect_request(lambda r: r.url.endswith("/v1/audio/speech")) as timed:
        page.get_by_role("button", name="Generate").click()
    sent = timed.value.post_data_json or {}
    assert sent.get("timestamps") is True and sent.get("stream_format") == "sse"
    expect(page.locator("#speak-output .player")).to_have_attribute("data-state", "done", timeout=TIMEOUT_MS)
    expect(page.locator("#speak-error")).to_be_hidden()
    expect(page.get_by_role("group", name="Words with their times")).to_be_visible()
    expect(words).to_have_count(len(expected), timeout=TIMEOUT_MS)
    assert [w.strip(".,") for w in words.all_inner_texts()] == expected
    starts = [float(s) for s in strip.evaluate("el => [...el.querySelectorAll('.word')].map(w => w.dataset.start)")]
    assert starts == sorted(starts) and len(set(starts)) == len(starts), starts  # strictly increasing
    assert re.fullmatch(r"\d+\.\d\d–\d+\.\d\d s", words.first.get_attribute("title") or "")
    result = player_result(page, "#speak-output .player")
    assert result["duration"] > starts[-1]

    # A click on a word plays from there, and that word is marked (the playback still under way from
    # before the click may mark its own word first).
    page.evaluate("window.marked = []")
    words.nth(5).click()
    page.wait_for_function("window.marked.some(([w]) => w.replace(/[.,]/g, '') === 'boats')", timeout=TIMEOUT_MS)
    marks = page.evaluate("window.marked")
    assert ["boats", "true"] in [[w.strip(".,"), current] for w, current in marks], marks
    shot(page, "speak-word-timings")

    # The captions of the generation, as the links give them.
    captions = page.locator("#speak-captions")
    expect(captions).to_be_visible()
    srt = captions.get_by_role("link", name="SRT")
    expect(captions.get_by_role("link", name="WebVTT")).to_have_attribute("href", re.compile(r"/captions\?format=vtt$"))
    href = srt.get_attribute("href") or ""
    assert re.search(r"/v1/history/[^/]+/captions\?format=srt$", href), href
    body = page.evaluate("url => fetch(url).then(r => r.text())", href)
    assert body.startswith("1\n00:00:00,"), body[:80]
    generation_id = page.locator("#speak-output .player").get_attribute("data-generation-id")
    assert client.get(f"/v1/history/{generation_id}/captions", params={"format": "srt"}).text == body
