"""OpenAI chat messages -> turns plus at most one visual input, or a 400 naming the part it cannot use.

Content parts: ``text`` (or a bare string), ``video_url`` (one video),
``image_url`` (one: an image; two or more in one message: the frames of one
video, in order, as lmms-eval's ``openai`` model and many clients send a video).
``{"url": ...}`` may also be given as a bare string. Every other part
(``input_audio``, ``audio_url``, ``file``, ...) is refused, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from videopanda.data.conversation import Turn
from videopanda.serve.protocol import APIError, ChatCompletionRequest

VisualKind = Literal["video", "frames", "image"]
TEXT_ROLES = ("system", "developer", "user", "assistant")


@dataclass
class VisualRef:
    """Where a request's visual input is: its URLs, and the message and part names they came from."""

    kind: VisualKind
    urls: list[str]
    params: list[str]  # "messages[0].content[1]" per URL, for error messages
    turn: int  # index into ParsedChat.turns of the user turn it belongs to


@dataclass
class ParsedChat:
    system: str | None
    turns: list[Turn]  # user/assistant, ending with the user's question
    visual: VisualRef | None = None
    num_frames: int | None = None  # requested frames of a video (None: the model's); the model checks the count


def parse_chat(request: ChatCompletionRequest, max_image_parts: int) -> ParsedChat:
    """The request's turns and visual input; raises ``APIError`` (400) for anything it cannot use."""
    system: list[str] = []
    turns: list[Turn] = []
    visuals: list[VisualRef] = []
    for m, message in enumerate(request.messages):
        role = message.get("role")
        if role not in TEXT_ROLES:
            raise APIError(400, f"messages[{m}]: role {role!r} is not supported (use {', '.join(TEXT_ROLES)})",
                           f"messages[{m}].role")
        text, refs = _content(message.get("content"), f"messages[{m}]")
        if refs and role != "user":
            raise APIError(400, f"messages[{m}]: only user messages may carry images or videos", refs[0][1])
        if role in ("system", "developer"):
            system.append(text)
            continue
        if refs:
            visuals.append(_visual(refs, len(turns)))
        turns.append(Turn(role, text))
    if request.video:
        visuals.append(VisualRef("video", [request.video], ["video"], _first_user(turns)))
    if len(visuals) > 1:
        raise APIError(400, f"one video or image per request, got {len(visuals)} ({visuals[1].params[0]})",
                       visuals[1].params[0])
    if not turns or turns[-1].role != "user":
        raise APIError(400, "the last message must be the user's", "messages")
    visual = visuals[0] if visuals else None
    if visual is not None and visual.kind == "frames" and len(visual.urls) > max_image_parts:
        raise APIError(400, f"{len(visual.urls)} image_url parts exceed this server's limit of {max_image_parts}",
                       "messages")
    return ParsedChat("\n".join(system) or None, turns, visual, requested_frames(request))


def requested_frames(request: ChatCompletionRequest) -> int | None:
    """``num_frames``, or vLLM's ``media_io_kwargs: {"video": {"num_frames": N}}`` (an integer; which counts
    a model takes is ``limits.check_num_frames``, checked by the served model)."""
    kwargs = request.media_io_kwargs or {}
    unknown = [f"media_io_kwargs.{k}" for k in kwargs if k != "video"]
    video_kwargs = kwargs.get("video") or {}
    if not isinstance(video_kwargs, dict):
        raise APIError(400, "media_io_kwargs.video must be an object", "media_io_kwargs.video")
    unknown += [f"media_io_kwargs.video.{k}" for k in video_kwargs if k != "num_frames"]
    if unknown:
        raise APIError(400, f"{unknown[0]} is not supported (only media_io_kwargs.video.num_frames)", unknown[0])
    value = request.num_frames if request.num_frames is not None else video_kwargs.get("num_frames")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise APIError(400, f"num_frames must be an integer, got {value!r}", "num_frames")
    return value


def _content(content: Any, where: str) -> tuple[str, list[tuple[str, str, str]]]:
    """A message's text and its visual parts as (type, param, url)."""
    if content is None or isinstance(content, str):
        return content or "", []
    if not isinstance(content, list):
        raise APIError(400, f"{where}.content must be a string or a list of parts", f"{where}.content")
    texts, refs = [], []
    for p, part in enumerate(content):
        param = f"{where}.content[{p}]"
        if isinstance(part, str):  # a bare string where a part is expected: its text
            texts.append(part)
            continue
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise APIError(400, f"{param}: a text part needs a 'text' string", param)
            texts.append(part["text"])
        elif kind in ("image_url", "video_url"):
            refs.append((kind, param, _url(part, kind, param)))
        else:
            raise APIError(400, f"{param}: a {kind!r} part cannot be used by this server "
                                "(it reads text, image_url and video_url parts)", param)
    return "\n".join(texts), refs


def _url(part: dict[str, Any], kind: str, param: str) -> str:
    value = part.get(kind)
    url = value if isinstance(value, str) else value.get("url") if isinstance(value, dict) else None
    if not isinstance(url, str) or not url:
        raise APIError(400, f"{param}: {kind} needs a 'url' string ({kind}: {{'url': ...}} or a bare string)",
                       param)
    return url


def _visual(refs: list[tuple[str, str, str]], turn: int) -> VisualRef:
    kinds = {kind for kind, _, _ in refs}
    params, urls = [param for _, param, _ in refs], [url for _, _, url in refs]
    if kinds == {"video_url"} and len(refs) == 1:
        return VisualRef("video", urls, params, turn)
    if kinds == {"image_url"}:
        return VisualRef("image" if len(refs) == 1 else "frames", urls, params, turn)
    raise APIError(400, f"{params[1]}: one message holds one video_url, or image_url parts (one image, or the "
                        "frames of one video), not both or several videos", params[1])


def _first_user(turns: list[Turn]) -> int:
    return next((i for i, t in enumerate(turns) if t.role == "user"), 0)
