"""A synthetic video-language dataset of real video files (``videopanda data synth``).

Scenes are large saturated shapes on a mid-grey background, small and short
(16 frames at 8 fps, 2 frames per logical step, so the release's frame
sampling picks one frame of each of the 8 steps), in several containers and
aspect ratios. Three scene kinds:

- ``move``: one object moves up or down;
- ``blink``: one still object disappears one, two or three times;
- ``order``: two objects; one moves during the first half, the other after.

Directions are vertical on purpose: training flips frames horizontally
(spec section 1), which would contradict "left"/"right" labels.

Written in the seed's layout::

    OUT/train/train_json/valley_synth.json        captions (Video-LLaVA format, pretraining)
    OUT/train/train_json/videochatgpt_synth.json  question answering (instruction tuning)
    OUT/train/valley/, OUT/train/videochatgpt_tune/   their videos
    OUT/eval/GPT_Zero_Shot_QA/Synth_Zero_Shot_QA/{test_q.json, test_a.json, chance.json, videos/}

Every answer is one word; each fine question type (colour, shape, size,
direction, order, count) rolls up to ``appearance`` or ``temporal`` and has a
known chance level (uniform guessing over the answers the question allows).
The same seed gives byte-identical annotation files and identical videos.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from videopanda.data.video_writer import write_video

logger = logging.getLogger(__name__)

# Colours exactly representable in GIF's rgb8 palette (3-3-2 bits), far apart in RGB.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 219, 0),
    "blue": (0, 73, 255),
    "yellow": (255, 255, 0),
    "purple": (182, 0, 255),
    "white": (255, 255, 255),
}
# Mid grey, exactly representable in GIF's palette, near the CLIP mean colour: it normalises to about 0,
# so empty patches embed to about 0 and the visual tokens carry the objects rather than a constant
# (measured on the quickstart's STAB at init: variance across videos 4% of the tokens' energy on black,
# 28% on grey).
BACKGROUND = (109, 109, 85)
SHAPES = ("circle", "square", "triangle")
# Half-extent as a share of the short side; small still spans a 56-px frame's patch.
SIZES = {"big": 0.24, "small": 0.16}
DIRECTIONS = ("up", "down")
COUNT_WORDS = ("one", "two", "three")
FRAME_SIZES = {"wide": (72, 128), "tall": (128, 72), "square": (96, 96)}  # (H, W), even for 4:2:0 codecs
CONTAINERS = (".mp4", ".avi", ".gif", ".webm", ".mkv")
SceneKind = Literal["move", "blink", "order"]
KINDS: tuple[SceneKind, ...] = ("move", "blink", "order")

COARSE_TYPE = {"colour": "appearance", "shape": "appearance", "size": "appearance",
               "direction": "temporal", "order": "temporal", "count": "temporal"}
ANSWER_SETS: dict[str, tuple[str, ...]] = {"colour": tuple(PALETTE), "shape": SHAPES, "size": tuple(SIZES),
                                           "direction": DIRECTIONS, "count": COUNT_WORDS}
# Answers a question allows; "order" names its two candidate colours in the question.
NUM_OPTIONS = {**{kind: len(answers) for kind, answers in ANSWER_SETS.items()}, "order": 2}
QA_DIR = Path("eval/GPT_Zero_Shot_QA/Synth_Zero_Shot_QA")
CAPTION_PROMPTS = ("Describe the video briefly.", "What happens in the video?", "Give a short caption of the video.")


@dataclass(frozen=True)
class SynthConfig:
    seed: int = 0
    num_train: int = 600  # videos in each training set (captions, QA)
    num_test: int = 90  # held-out videos of the zero-shot QA set
    steps: int = 8  # logical time steps; the release samples 8 frames
    frames_per_step: int = 2
    fps: float = 8.0


@dataclass(frozen=True)
class SceneObject:
    colour: str
    shape: str
    size: str
    x: float  # centre, as a share of the width
    y0: float  # centre at the start, as a share of the height
    y1: float  # centre at the end of its motion


@dataclass(frozen=True)
class Scene:
    kind: SceneKind
    height: int
    width: int
    objects: tuple[SceneObject, ...]
    hidden_steps: tuple[int, ...] = ()  # blink: steps at which the object is invisible
    first: int = 0  # order: index of the object that moves first

    @property
    def direction(self) -> str:
        obj = self.objects[0]
        return "up" if obj.y1 < obj.y0 else "down"


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    type: str  # fine type, a key of COARSE_TYPE


@dataclass(frozen=True)
class SynthSummary:
    root: Path
    num_videos: int
    num_questions: int
    chance: dict[str, float]


# ----------------------------------------------------------------------------- scenes


def sample_scene(rng: np.random.Generator, kind: SceneKind, aspect: str = "square") -> Scene:
    """Random scene parameters of one kind, on a frame of the given aspect (a key of FRAME_SIZES)."""
    height, width = FRAME_SIZES[aspect]
    if kind == "order":
        colours = rng.choice(list(PALETTE), size=2, replace=False)
        objects = tuple(
            _sample_object(rng, str(c), x_range=(x, x), moving=True) for c, x in zip(colours, (0.25, 0.75), strict=True)
        )
        # Equal sizes: "which moves first" must not be answerable by size.
        size = str(rng.choice(list(SIZES)))
        objects = tuple(SceneObject(o.colour, o.shape, size, o.x, o.y0, o.y1) for o in objects)
        return Scene(kind, height, width, objects, first=int(rng.integers(2)))
    obj = _sample_object(rng, str(rng.choice(list(PALETTE))), x_range=(0.3, 0.7), moving=kind == "move")
    hidden: tuple[int, ...] = ()
    if kind == "blink":
        count = int(rng.integers(1, len(COUNT_WORDS) + 1))
        hidden = _blink_steps(rng, count)
    return Scene(kind, height, width, (obj,), hidden_steps=hidden)


def _sample_object(rng: np.random.Generator, colour: str, x_range: tuple[float, float], moving: bool) -> SceneObject:
    shape = str(rng.choice(SHAPES))
    size = str(rng.choice(list(SIZES)))
    x = float(rng.uniform(*x_range))
    if not moving:
        y = float(rng.uniform(0.4, 0.6))
        return SceneObject(colour, shape, size, x, y, y)
    top, bottom = 0.28, 0.72
    y0, y1 = (bottom, top) if rng.integers(2) else (top, bottom)
    return SceneObject(colour, shape, size, x, y0, y1)


def _blink_steps(rng: np.random.Generator, count: int) -> tuple[int, ...]:
    """``count`` non-adjacent hidden steps among 1..6 (visible at the first and last step)."""
    while True:
        steps = np.sort(rng.choice(np.arange(1, 7), size=count, replace=False))
        if count == 1 or np.diff(steps).min() > 1:
            return tuple(int(s) for s in steps)


def render_scene(scene: Scene, steps: int = 8, frames_per_step: int = 2) -> np.ndarray:
    """The scene's frames: (steps * frames_per_step, H, W, 3) uint8."""
    canvas = np.empty((steps, scene.height, scene.width, 3), np.uint8)
    canvas[:] = BACKGROUND
    rows = np.arange(scene.height, dtype=np.float32)[None, :, None]  # (1, H, 1)
    cols = np.arange(scene.width, dtype=np.float32)[None, None, :]  # (1, 1, W)
    time = np.arange(steps, dtype=np.float32)
    short = min(scene.height, scene.width)
    for index, obj in enumerate(scene.objects):
        progress = _motion_progress(scene, index, time, steps)  # (steps,)
        cy = (obj.y0 + (obj.y1 - obj.y0) * progress) * scene.height
        cx = np.full(steps, obj.x * scene.width, np.float32)
        mask = shape_mask(obj.shape, cx[:, None, None], cy[:, None, None], SIZES[obj.size] * short, rows, cols)
        if scene.hidden_steps:
            mask[list(scene.hidden_steps)] = False
        canvas[mask] = PALETTE[obj.colour]
    return np.repeat(canvas, frames_per_step, axis=0)


def _motion_progress(scene: Scene, index: int, time: np.ndarray, steps: int) -> np.ndarray:
    """(steps,) share of the object's path covered at each step."""
    if scene.kind != "order":
        return time / (steps - 1)
    half = steps // 2
    start = 0 if index == scene.first else half
    return np.clip((time - start) / (half - 1), 0.0, 1.0)


def shape_mask(shape: str, cx: np.ndarray, cy: np.ndarray, r: float, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Boolean pixels of a shape with half-extent ``r`` centred at (cx, cy); broadcasts to (S, H, W)."""
    dy, dx = rows - cy, cols - cx
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        return (np.abs(dx) <= r * 0.85) & (np.abs(dy) <= r * 0.85)  # same area as the circle, about
    if shape == "triangle":  # apex up; the half-width grows from 0 at the top to r at the bottom
        return (dy >= -r) & (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
    raise ValueError(f"unknown shape {shape!r} (known: {SHAPES})")


# ----------------------------------------------------------------------------- language


def _name(obj: SceneObject) -> str:
    return f"{obj.colour} {obj.shape}"


def caption(scene: Scene) -> str:
    obj = scene.objects[0]
    if scene.kind == "move":
        return f"A {obj.size} {_name(obj)} moves {scene.direction}."
    if scene.kind == "blink":
        count = len(scene.hidden_steps)
        return f"A {obj.size} {_name(obj)} blinks {COUNT_WORDS[count - 1]} {'time' if count == 1 else 'times'}."
    first, second = scene.objects[scene.first], scene.objects[1 - scene.first]
    return f"The {_name(first)} moves first, then the {_name(second)}."


def appearance_questions(obj: SceneObject) -> list[QA]:
    # Questions never name another attribute: in a multi-turn sample that would leak an answer.
    return [
        QA("What colour is the object?", obj.colour, "colour"),
        QA("What shape is the object?", obj.shape, "shape"),
        QA("Is the object big or small?", obj.size, "size"),
    ]


def temporal_question(scene: Scene, rng: np.random.Generator) -> QA:
    if scene.kind == "move":
        return QA("Does the object move up or down?", scene.direction, "direction")
    if scene.kind == "blink":
        return QA("How many times does the object blink?", COUNT_WORDS[len(scene.hidden_steps) - 1], "count")
    a, b = rng.permutation(2)  # the order in which the question names the two objects
    colours = [o.colour for o in scene.objects]
    return QA(f"Which moves first, the {colours[a]} one or the {colours[b]} one?", colours[scene.first], "order")


def scene_questions(scene: Scene, rng: np.random.Generator) -> list[QA]:
    """Every question a scene answers (the temporal one, and appearance for one-object scenes)."""
    appearance = [] if scene.kind == "order" else appearance_questions(scene.objects[0])
    return [*appearance, temporal_question(scene, rng)]


def chance_levels(types: Iterable[str]) -> dict[str, float]:
    """Accuracy of uniform guessing per fine type and, question-weighted, per coarse type."""
    types = list(types)
    unknown = sorted(set(types) - set(COARSE_TYPE))
    if unknown:
        raise ValueError(f"unknown question type(s) {unknown} (known: {sorted(COARSE_TYPE)})")
    levels = {t: 1.0 / NUM_OPTIONS[t] for t in sorted(set(types))}
    for coarse in sorted(set(COARSE_TYPE.values())):
        members = [1.0 / NUM_OPTIONS[t] for t in types if COARSE_TYPE[t] == coarse]
        if members:
            levels[coarse] = float(np.mean(members))
    return levels


def load_chance(qa_dir: str | Path) -> dict[str, float]:
    """Chance levels of a zero-shot QA set: its ``chance.json``, else computed from ``test_a.json``."""
    qa_dir = Path(qa_dir)
    if (qa_dir / "chance.json").is_file():
        return json.loads((qa_dir / "chance.json").read_text())
    return chance_levels(item["type"] for item in json.loads((qa_dir / "test_a.json").read_text()))


# ----------------------------------------------------------------------------- writing


def _video_rng(seed: int, split: int, index: int) -> np.random.Generator:
    """One generator per video: adding videos to a split never changes the others."""
    return np.random.default_rng([seed, split, index])


def scene_at(rng: np.random.Generator, index: int) -> Scene:
    """A split's ``index``-th scene: kind cycles with period 3, aspect with period 9 (each kind on each aspect)."""
    aspects = list(FRAME_SIZES)
    return sample_scene(rng, KINDS[index % len(KINDS)], aspects[(index // len(KINDS)) % len(aspects)])


def _build_split(root: Path, subdir: str, split: int, count: int, config: SynthConfig, desc: str):
    """Yield (name, video path relative to ``root``, scene, rng) for ``count`` new videos (``scene_at``);
    container cycles with period 5 (coprime with the scenes' 9: small sets hold every container).
    """
    for index in tqdm(range(count), desc=desc, unit="video", leave=False):
        rng = _video_rng(config.seed, split, index)
        scene = scene_at(rng, index)
        name = f"synth_{split}_{index:05d}"
        frames = render_scene(scene, config.steps, config.frames_per_step)
        path = write_video(root / subdir / f"{name}{CONTAINERS[index % len(CONTAINERS)]}", frames, fps=config.fps)
        yield name, path.relative_to(root), scene, rng


def write_captions(train_root: Path, config: SynthConfig) -> list[dict]:
    items = []
    for name, video, scene, rng in _build_split(train_root, "valley", 0, config.num_train, config, "captions"):
        prompt = CAPTION_PROMPTS[int(rng.integers(len(CAPTION_PROMPTS)))]
        items.append({"id": name, "video": video.as_posix(), "conversations": [
            {"from": "human", "value": f"<video>\n{prompt}"}, {"from": "gpt", "value": caption(scene)}]})
    return items


def write_instructions(train_root: Path, config: SynthConfig) -> list[dict]:
    """Multi-turn QA: every question of a video, in random order, in one conversation."""
    items = []
    for name, video, scene, rng in _build_split(train_root, "videochatgpt_tune", 1, config.num_train, config, "QA"):
        questions = scene_questions(scene, rng)
        turns = []
        for i in rng.permutation(len(questions)):
            qa = questions[int(i)]
            turns += [{"from": "human", "value": qa.question}, {"from": "gpt", "value": qa.answer}]
        turns[0]["value"] = f"<video>\n{turns[0]['value']}"
        items.append({"id": name, "video": video.as_posix(), "conversations": turns})
    return items


def write_zero_shot_qa(qa_root: Path, config: SynthConfig) -> tuple[list[dict], list[dict]]:
    """Held-out videos: one appearance question (cycling colour/shape/size) + the temporal one.

    The appearance question cycles with period 27, after kind (3) and aspect (9): every question is asked
    on every aspect. (It once cycled with the aspect's period 9: shape was asked only of tall videos,
    size only of square ones.)
    """
    test_q, test_a = [], []
    for index, (name, _, scene, rng) in enumerate(_build_split(qa_root, "videos", 2, config.num_test, config, "test")):
        questions = scene_questions(scene, rng)
        if scene.kind != "order":
            questions = [questions[(index // (len(KINDS) * len(FRAME_SIZES))) % 3], questions[-1]]
        for qa in questions:
            qid = f"{name}_{qa.type}"
            test_q.append({"video_name": name, "question": qa.question, "question_id": qid})
            test_a.append({"answer": qa.answer, "type": qa.type, "question_id": qid})
    return test_q, test_a


def _dump(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")


def synthesize(out: str | Path, config: SynthConfig = SynthConfig()) -> SynthSummary:
    """Write the whole dataset under ``out`` (see the module docstring for the layout)."""
    if config.num_train < 0 or config.num_test < 1:
        raise ValueError(f"need num_train >= 0 and num_test >= 1, got {config.num_train}, {config.num_test}")
    out = Path(out)
    train_root, qa_root = out / "train", out / QA_DIR
    _dump(train_root / "train_json" / "valley_synth.json", write_captions(train_root, config))
    _dump(train_root / "train_json" / "videochatgpt_synth.json", write_instructions(train_root, config))
    test_q, test_a = write_zero_shot_qa(qa_root, config)
    _dump(qa_root / "test_q.json", test_q)
    _dump(qa_root / "test_a.json", test_a)
    chance = chance_levels(a["type"] for a in test_a)
    _dump(qa_root / "chance.json", chance)
    summary = SynthSummary(out, 2 * config.num_train + config.num_test, len(test_q), chance)
    logger.info("wrote %d videos and %d held-out questions under %s", summary.num_videos, summary.num_questions, out)
    return summary
