"""`videopanda demo`: its chat actions, and the page in a real headless Chromium (Debian's, with selenium).

The model is a tiny random Video-Panda whose answers follow its frames; each
answer the page must show is the in-process predictor's own for that video,
question and history. The browser test skips only where Chromium is absent;
CI (.ci/run) installs it.
"""

from __future__ import annotations

import shutil
import time

import pytest

gr = pytest.importorskip("gradio", reason="the demo extra: pip install -e '.[demo]'")

from conftest import moving_square_frames  # noqa: E402
from serve_support import frames_sensitive_model, free_port  # noqa: E402
from videopanda.data.conversation import Turn  # noqa: E402
from videopanda.data.decode import read_video_frames  # noqa: E402
from videopanda.data.video_writer import write_video  # noqa: E402
from videopanda.inference import GenerationConfig, VideoPandaPredictor  # noqa: E402
from videopanda.serve.demo import DemoActions, DemoBackend, DemoConfig, history_turns, launch  # noqa: E402

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1000")
TOKENS = 6


@pytest.fixture(scope="module")
def demo_model(tiny_videopanda_dir, tmp_path_factory):
    return frames_sensitive_model(tiny_videopanda_dir, tmp_path_factory.mktemp("demo") / "panda")


@pytest.fixture(scope="module")
def predictor(demo_model):
    return VideoPandaPredictor.from_pretrained(demo_model, GenerationConfig())


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("clips") / "red square.mp4",
                       moving_square_frames(16, 48, 64, (255, 0, 0)), fps=4.0)


def expected(predictor, clip, question, history=()):
    return predictor.answer([predictor.load_video(clip)], [question], [list(history)], max_new_tokens=TOKENS)[0]


def test_chat_regenerate_and_frames_without_a_browser(demo_model, predictor, clip):
    actions = DemoActions(DemoBackend(DemoConfig(demo_model, max_new_tokens=TOKENS)))
    assert len(actions.show_frames(str(clip))) == len(read_video_frames(clip, num_frames=8))
    messages, box = actions.send(str(clip), [], "What moves?", "float32", TOKENS)
    first = expected(predictor, clip, "What moves?")
    assert box == "" and messages == [{"role": "user", "content": "What moves?"},
                                      {"role": "assistant", "content": first}]
    # gradio 6 hands the history back as message dicts whose content is a list of text parts
    normalized = [{"role": m["role"], "content": [{"type": "text", "text": m["content"]}]} for m in messages]
    messages, _ = actions.send(str(clip), normalized, "Which colour?", "float32", TOKENS)
    history = [Turn("user", "What moves?"), Turn("assistant", first)]
    assert messages[-1]["content"] == expected(predictor, clip, "Which colour?", history)
    shorter = actions.regenerate(str(clip), messages, "float32", 2)
    assert history_turns(shorter[:-1]) == history_turns(messages[:-1])
    assert shorter[-1]["content"] == predictor.answer(
        [predictor.load_video(clip)], ["Which colour?"], [history], max_new_tokens=2)[0]


@pytest.fixture
def demo_url(demo_model, clip):
    port = free_port()
    demo = launch(DemoConfig(demo_model, dtype="float32", max_new_tokens=TOKENS, examples=(clip,)),
                  port=port, block=False)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture
def browser(tmp_path):
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(
            "Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def wait_for(condition, timeout_s=120.0, what="the page"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_demo_in_headless_chromium(demo_url, browser, predictor, clip, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(demo_url)
    upload = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#video input[type=file]"), what="the upload")
    upload[0].send_keys(str(clip))
    frames = len(read_video_frames(clip, num_frames=8))
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#frames img")) >= frames, what="sampled frames")

    def ask(question):
        box = browser.find_element(By.CSS_SELECTOR, "#question textarea")
        box.send_keys(question)
        browser.find_element(By.ID, "send").click()

    def chat_text():
        return browser.find_element(By.ID, "chat").text

    first = expected(predictor, clip, "What moves?")
    ask("What moves?")
    wait_for(lambda: first in chat_text(), what=f"the answer {first!r}")
    second = expected(predictor, clip, "Which colour?", [Turn("user", "What moves?"), Turn("assistant", first)])
    ask("Which colour?")
    wait_for(lambda: second in chat_text(), what=f"the second answer {second!r}")
    assert "What moves?" in chat_text() and "Which colour?" in chat_text()
    screenshot = tmp_path / "demo.png"
    browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000
    browser.find_element(By.ID, "clear").click()
    wait_for(lambda: first not in chat_text() and second not in chat_text(), what="the cleared chat")
