"""`videopanda demo`: a gradio web app to chat about a video with a Video-Panda model.

Upload a video (or pick an example), see the frames the model samples, ask
question after question (the chat history is gradio's message dicts), clear,
regenerate the last answer (after changing the precision or the token limit,
say: decoding is greedy). Answers come from ``VideoPandaPredictor``, the one
inference path of ``ask``, ``chat``, ``serve`` and ``eval run``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from videopanda.data.conversation import Turn
from videopanda.data.decode import VideoDecodeError, read_video_frames
from videopanda.data.transform import VisualInputs
from videopanda.inference import GenerationConfig, VideoPandaPredictor
from videopanda.runtime import DTYPE_CHOICES

logger = logging.getLogger(__name__)
Message = dict[str, Any]  # gradio's message dict: {"role": ..., "content": str or a list of parts}


@dataclass(frozen=True)
class DemoConfig:
    model_dir: Path
    device: str = "cpu"
    dtype: str = "auto"  # the precision selected first; the page can change it
    max_new_tokens: int = 256
    examples: tuple[Path, ...] = field(default_factory=tuple)


class DemoBackend:
    """One predictor per precision (loaded on first use) and the last video's preprocessed frames."""

    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        self._predictors: dict[str, VideoPandaPredictor] = {}
        self._visuals: dict[tuple[str, str], VisualInputs] = {}
        self._lock = threading.Lock()  # one generation at a time: the model is shared

    def predictor(self, dtype: str) -> VideoPandaPredictor:
        if dtype not in self._predictors:
            logger.info("loading %s in %s", self.config.model_dir, dtype)
            self._predictors[dtype] = VideoPandaPredictor.from_pretrained(
                self.config.model_dir, GenerationConfig(max_new_tokens=self.config.max_new_tokens),
                device=self.config.device, dtype=dtype)
        return self._predictors[dtype]

    def sampled_frames(self, video: str) -> list[np.ndarray]:
        """The frames the model sees, before resizing: (H, W, 3) uint8 each."""
        num_frames = self.predictor(self.config.dtype).model.config.num_frames
        return list(read_video_frames(video, num_frames=num_frames))

    def reply(self, video: str | None, history: list[Turn], question: str, dtype: str, max_new_tokens: int) -> str:
        with self._lock:
            predictor = self.predictor(dtype)
            visuals = None if video is None else self._video(predictor, video, dtype)
            return predictor.answer([visuals], [question], [history], max_new_tokens=max_new_tokens)[0]

    def _video(self, predictor: VideoPandaPredictor, video: str, dtype: str) -> VisualInputs:
        if (video, dtype) not in self._visuals:
            self._visuals = {(video, dtype): predictor.load_video(video)}  # keep only the current video
        return self._visuals[(video, dtype)]


def message_text(content: Any) -> str:
    """The text of a gradio message's content: a string, or a list of parts with ``text``."""
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else [content]
    return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in parts)


def history_turns(messages: list[Message]) -> list[Turn]:
    return [Turn(m["role"], message_text(m["content"])) for m in messages if m["role"] in ("user", "assistant")]


class DemoActions:
    """What the page's buttons do; plain functions of the page's values, testable without a browser."""

    def __init__(self, backend: DemoBackend) -> None:
        self.backend = backend

    def show_frames(self, video: str | None) -> list[np.ndarray]:
        if not video:
            return []
        try:
            return self.backend.sampled_frames(video)
        except VideoDecodeError as err:
            raise gr.Error(f"cannot read this video: {err}") from None

    def send(self, video: str | None, messages: list[Message] | None, question: str, dtype: str,
             max_new_tokens: float) -> tuple[list[Message], str]:
        question = (question or "").strip()
        messages = list(messages or [])
        if not question:
            return messages, ""
        answer = self._answer(video, history_turns(messages), question, dtype, max_new_tokens)
        return [*messages, {"role": "user", "content": question}, {"role": "assistant", "content": answer}], ""

    def regenerate(self, video: str | None, messages: list[Message] | None, dtype: str,
                   max_new_tokens: float) -> list[Message]:
        turns = history_turns(messages or [])
        while turns and turns[-1].role == "assistant":
            turns.pop()
        if not turns:
            return list(messages or [])
        answer = self._answer(video, turns[:-1], turns[-1].text, dtype, max_new_tokens)
        return [*({"role": t.role, "content": t.text} for t in turns), {"role": "assistant", "content": answer}]

    def _answer(self, video: str | None, history: list[Turn], question: str, dtype: str, max_new_tokens: float) -> str:
        try:
            return self.backend.reply(video or None, history, question, dtype, int(max_new_tokens))
        except VideoDecodeError as err:
            raise gr.Error(f"cannot read this video: {err}") from None


def build_demo(backend: DemoBackend) -> gr.Blocks:
    """The page: video, sampled frames and settings on the left, the chat on the right."""
    config, actions = backend.config, DemoActions(backend)
    with gr.Blocks(title="Video-Panda demo", analytics_enabled=False) as demo:
        gr.Markdown(f"## Video-Panda: chat about a video\nModel: `{config.model_dir.name}`")
        with gr.Row():
            with gr.Column(scale=1):
                video = gr.Video(label="Video", sources=["upload"], elem_id="video")
                if config.examples:
                    gr.Examples([[str(p)] for p in config.examples], inputs=[video], label="Examples")
                frames = gr.Gallery(label="Frames the model samples", columns=4, height=220, elem_id="frames")
                dtype = gr.Dropdown(list(DTYPE_CHOICES), value=config.dtype, label="Precision", elem_id="dtype")
                max_new_tokens = gr.Slider(1, 1024, value=config.max_new_tokens, step=1, label="Max new tokens",
                                           elem_id="max-new-tokens")
            with gr.Column(scale=2):
                chat = gr.Chatbot(label="Chat", height=420, elem_id="chat", render_markdown=False,
                                  feedback_options=None)
                question = gr.Textbox(label="Question", placeholder="Ask about the video", elem_id="question")
                with gr.Row():
                    send = gr.Button("Send", variant="primary", elem_id="send")
                    regenerate = gr.Button("Regenerate", elem_id="regenerate")
                    clear = gr.Button("Clear", elem_id="clear")
        video.change(actions.show_frames, [video], [frames])
        for trigger in (send.click, question.submit):
            trigger(actions.send, [video, chat, question, dtype, max_new_tokens], [chat, question])
        regenerate.click(actions.regenerate, [video, chat, dtype, max_new_tokens], [chat])
        clear.click(lambda: ([], ""), None, [chat, question])
    return demo


def launch(config: DemoConfig, host: str = "127.0.0.1", port: int = 7860, block: bool = True) -> gr.Blocks:
    """Build the demo on ``config`` and serve it locally (never a share link)."""
    backend = DemoBackend(config)
    backend.predictor(config.dtype)  # load before serving: the first answer should not wait for it
    demo = build_demo(backend)
    demo.queue(default_concurrency_limit=1)
    demo.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=not block, quiet=True,
                allowed_paths=sorted({str(p.resolve().parent) for p in config.examples}))
    return demo
