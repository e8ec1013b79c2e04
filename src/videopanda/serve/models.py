"""The two kinds of served model, on the one inference path of ``inference``.

- a Video-Panda model directory (``VideoPandaPredictor``): a video, the frames
  of one video, or an image, sampled and preprocessed exactly as ``ask`` and
  ``eval run`` do (frames sent as images are sampled by the release's rule at
  one frame per image, ``sampling.sample_frame_indices``). Its template has
  its own system line: a request's system message is not used. A request's
  ``num_frames`` follows ``limits.check_num_frames``, as ``ask --num-frames``;
- a plain chat LLM (``ChatLLM``, SmolLM2 by default), e.g. to run the judge
  locally: text only, a visual part is refused (``num_frames`` is not used).

Both refuse a text too long for the model's context before it is tokenised
(``limits.check_text_chars``), and before the request joins a batch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import numpy as np

from videopanda.data.decode import VideoDecodeError, read_image
from videopanda.data.sampling import sample_frame_indices
from videopanda.data.transform import VisualInputs
from videopanda.inference import (
    ChatLLM,
    GenerationConfig,
    GenerationRequest,
    GenerationResult,
    VideoPandaPredictor,
    is_loadable,
)
from videopanda.limits import LimitError, check_text_chars
from videopanda.serve.media import MediaPolicy, media_file, unreadable_local
from videopanda.serve.messages import ParsedChat, VisualRef
from videopanda.serve.protocol import APIError

logger = logging.getLogger(__name__)
FRAMES_PER_IMAGE_FPS = 1.0  # frames sent as images: one "second" each for the release's sampling rule


class ServedModel(Protocol):
    model_id: str

    def prepare(self, chat: ParsedChat, media: MediaPolicy, max_new_tokens: int, stop: list[str]) -> GenerationRequest:
        """The request's media loaded and its prompt checked; raises ``APIError`` for what it cannot use."""

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]: ...


class VideoPandaModel:
    def __init__(self, predictor: VideoPandaPredictor, model_id: str) -> None:
        self.predictor = predictor
        self.model_id = model_id

    def prepare(self, chat: ParsedChat, media: MediaPolicy, max_new_tokens: int, stop: list[str]) -> GenerationRequest:
        turns, visuals, visual_turn = list(chat.turns), None, None
        with _as_bad_request("messages"):  # the bounds, before any media is read
            check_text_chars((turn.text for turn in turns), self.predictor.processor.max_text_chars)
        if chat.num_frames is not None:
            with _as_bad_request("num_frames"):
                self.predictor.check_num_frames(chat.num_frames)
        if chat.visual is not None:
            visuals, visual_turn = self.load_visual(chat.visual, chat.num_frames, media), chat.visual.turn
        request = GenerationRequest(turns[-1].text, visuals, turns[:-1], visual_turn=visual_turn,
                                    max_new_tokens=max_new_tokens, stop=stop)
        try:  # the prompt's checks (turn order) before the request joins a batch
            self.predictor.processor.batch_prompts([request.question], [visuals], [request.history], [visual_turn])
        except ValueError as err:
            raise APIError(400, f"messages: {err}", "messages") from None
        return request

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        return self.predictor.generate(requests)

    def load_visual(self, ref: VisualRef, num_frames: int | None, media: MediaPolicy) -> VisualInputs:
        if ref.kind == "video":
            with media_file(ref.urls[0], ref.params[0], media) as path:
                try:
                    return self.predictor.load_video(path, num_frames)
                except VideoDecodeError:
                    raise undecodable(ref.urls[0], ref.params[0], "video") from None
        images = [self._read_image(url, param, media) for url, param in zip(ref.urls, ref.params, strict=True)]
        if ref.kind == "image":
            return self.predictor.preprocess_image(images[0])
        return self.predictor.preprocess_video(sample_frames(images, ref.params, num_frames or self.num_frames),
                                               num_frames)

    @property
    def num_frames(self) -> int:
        """Frames per video when a request names none: ``serve --num-frames``, else the model's."""
        return self.predictor.num_frames

    @staticmethod
    def _read_image(url: str, param: str, media: MediaPolicy) -> np.ndarray:
        with media_file(url, param, media) as path:
            try:
                return read_image(path)  # (1, H, W, 3)
            except VideoDecodeError:
                raise undecodable(url, param, "image") from None


def sample_frames(images: list[np.ndarray], params: list[str], num_frames: int) -> np.ndarray:
    """Images (1, H, W, 3) of one video -> the ``num_frames`` the release's rule samples, (T, H, W, 3)."""
    sizes = {image.shape for image in images}
    if len(sizes) > 1:
        odd = next(p for p, image in zip(params, images, strict=True) if image.shape != images[0].shape)
        raise APIError(400, f"{odd}: the frames of one video must share one size, got {sorted(sizes)}", odd)
    indices = sample_frame_indices(len(images), FRAMES_PER_IMAGE_FPS, num_frames)
    return np.concatenate([images[i] for i in indices])


@contextmanager
def _as_bad_request(param: str) -> Iterator[None]:
    """A ``LimitError`` inside as a 400 naming ``param``."""
    try:
        yield
    except LimitError as err:
        raise APIError(400, str(err), param) from None


def undecodable(url: str, param: str, kind: str) -> APIError:
    if url.startswith(("data:", "http://", "https://")):
        return APIError(400, f"{param}: the {kind} cannot be decoded", param, "invalid_media")
    return unreadable_local(param)


class ChatLLMModel:
    def __init__(self, llm: ChatLLM) -> None:
        self.llm = llm
        self.model_id = llm.model_id

    def prepare(self, chat: ParsedChat, media: MediaPolicy, max_new_tokens: int, stop: list[str]) -> GenerationRequest:
        if chat.visual is not None:
            raise APIError(400, f"{chat.visual.params[0]}: model {self.model_id!r} is a text-only LLM: it cannot "
                                f"see a {chat.visual.kind}", chat.visual.params[0])
        turns = chat.turns
        request = GenerationRequest(turns[-1].text, None, turns[:-1], system=chat.system,
                                    max_new_tokens=max_new_tokens, stop=stop)
        try:
            self.llm.check(request)
        except ValueError as err:
            raise APIError(400, f"messages: {err}", "messages") from None
        return request

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        return self.llm.generate(requests)


def load_served_model(
    source: str | None, device: str = "cpu", dtype: str = "auto", template: str | None = None,
    num_frames: int | None = None,
) -> ServedModel:
    """A Video-Panda model directory of any kind ``inference.load_model_dir`` takes, or a plain chat LLM.

    A Video-Panda model answers with the predictor of ``eval run`` and ``ask``: ``dtype`` is the
    precision policy's (``runtime``), ``template`` None the one the model directory records,
    ``num_frames`` None its config's frames per video (a request may ask for another count).
    """
    if source is not None and is_loadable(source):
        config = GenerationConfig(template=template, num_frames=num_frames)
        predictor = VideoPandaPredictor.from_pretrained(source, config, device=device, dtype=dtype)
        return VideoPandaModel(predictor, Path(source).name)
    return ChatLLMModel(ChatLLM.load(source))
