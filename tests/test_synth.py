"""The synthetic dataset: layout of the seed, reproducibility, decodable videos, answers true to the pixels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from videopanda.data.decode import find_video_file, read_video_frames
from videopanda.data.synth import (
    ANSWER_SETS,
    BACKGROUND,
    COARSE_TYPE,
    CONTAINERS,
    COUNT_WORDS,
    NUM_OPTIONS,
    PALETTE,
    QA_DIR,
    SynthConfig,
    chance_levels,
    load_chance,
    synthesize,
)

CONFIG = SynthConfig(seed=7, num_train=6, num_test=27)  # one cycle of every held-out question kind


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    synthesize(root, CONFIG)
    return root


def _annotation_files(root: Path) -> list[Path]:
    return [
        root / "train/train_json/valley_synth.json",
        root / "train/train_json/videochatgpt_synth.json",
        root / QA_DIR / "test_q.json",
        root / QA_DIR / "test_a.json",
        root / QA_DIR / "chance.json",
    ]


def test_layout_matches_the_seed(dataset):
    for file in _annotation_files(dataset):
        assert file.is_file(), file
    for name in ("valley_synth.json", "videochatgpt_synth.json"):
        items = json.loads((dataset / "train/train_json" / name).read_text())
        assert len(items) == CONFIG.num_train
        for item in items:
            assert (dataset / "train" / item["video"]).is_file()
            assert item["conversations"][0]["from"] == "human"
            assert item["conversations"][0]["value"].startswith("<video>\n")
            assert [t["from"] for t in item["conversations"]] == ["human", "gpt"] * (len(item["conversations"]) // 2)
    captions = json.loads((dataset / "train/train_json/valley_synth.json").read_text())
    assert {Path(i["video"]).parts[0] for i in captions} == {"valley"}
    test_q = json.loads((dataset / QA_DIR / "test_q.json").read_text())
    test_a = json.loads((dataset / QA_DIR / "test_a.json").read_text())
    assert [q["question_id"] for q in test_q] == [a["question_id"] for a in test_a]
    assert all(set(q) == {"video_name", "question", "question_id"} for q in test_q)
    assert all(set(a) == {"answer", "type", "question_id"} for a in test_a)
    assert len({q["question_id"] for q in test_q}) == len(test_q)
    assert {a["type"] for a in test_a} == set(COARSE_TYPE)
    assert all(len(a["answer"].split()) == 1 for a in test_a)


def test_held_out_videos_are_not_training_videos(dataset):
    test_names = {q["video_name"] for q in json.loads((dataset / QA_DIR / "test_q.json").read_text())}
    train_names = {p.stem for p in (dataset / "train").rglob("*") if p.suffix in CONTAINERS}
    assert test_names and not test_names & train_names


def test_same_seed_same_bytes_other_seed_other_data(dataset, tmp_path):
    synthesize(tmp_path / "again", CONFIG)
    for file in _annotation_files(dataset):
        assert (tmp_path / "again" / file.relative_to(dataset)).read_bytes() == file.read_bytes(), file
    for video in (dataset / QA_DIR / "videos").iterdir():
        again = tmp_path / "again" / video.relative_to(dataset)
        np.testing.assert_array_equal(read_video_frames(again), read_video_frames(video))
    synthesize(tmp_path / "other", SynthConfig(seed=8, num_train=6, num_test=9))
    other = (tmp_path / "other/train/train_json/valley_synth.json").read_bytes()
    assert other != (dataset / "train/train_json/valley_synth.json").read_bytes()


def test_every_video_decodes_in_every_container_and_aspect(dataset):
    videos = sorted(p for p in dataset.rglob("*") if p.suffix in CONTAINERS)
    assert len(videos) == 2 * CONFIG.num_train + CONFIG.num_test
    assert {p.suffix for p in videos} == set(CONTAINERS)
    shapes = set()
    for video in videos:
        frames = read_video_frames(video)
        assert frames.shape[0] == 8 and frames.dtype == np.uint8, video
        shapes.add(frames.shape[1:3])
    assert {h > w for h, w in shapes} == {True, False} and any(h == w for h, w in shapes)


# ----------------------------------------------------------------------------- answers from the pixels


def _foreground(frames: np.ndarray) -> np.ndarray:
    """(T, H, W) bool: pixels clearly away from the grey background."""
    return np.abs(frames.astype(int) - np.array(BACKGROUND)).sum(-1) > 120


def _dominant_colour(pixels: np.ndarray) -> str:
    names, colours = list(PALETTE), np.array(list(PALETTE.values()))
    nearest = ((pixels[:, None].astype(int) - colours[None]) ** 2).sum(-1).argmin(1)
    return names[int(np.bincount(nearest, minlength=len(names)).argmax())]


def _shape_and_size(mask: np.ndarray) -> tuple[str, str]:
    rows, cols = np.nonzero(mask)
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    fill = mask.sum() / box  # square ~1, circle ~pi/4, triangle ~1/2
    shape = "square" if fill > 0.9 else "circle" if fill > 0.65 else "triangle"
    size = "big" if mask.sum() > 0.1 * min(mask.shape) ** 2 else "small"  # small <= 0.08, big >= 0.115
    return shape, size


def _centre_row(mask: np.ndarray) -> np.ndarray:
    """(T,) mean row of the foreground per frame."""
    rows = np.arange(mask.shape[1])[None, :, None]
    return (mask * rows).sum((1, 2)) / np.maximum(mask.sum((1, 2)), 1)


def answer_from_pixels(frames: np.ndarray, question: str, kind: str) -> str:
    fg = _foreground(frames)  # (T, H, W)
    visible = fg.any((1, 2))
    if kind == "colour":
        return _dominant_colour(frames[fg])
    if kind in ("shape", "size"):
        shape, size = _shape_and_size(fg[int(np.argmax(visible))])
        return shape if kind == "shape" else size
    if kind == "direction":
        rows = _centre_row(fg)
        return "up" if rows[-1] < rows[0] else "down"
    if kind == "count":
        hidden_runs = int((np.diff(visible.astype(int)) == -1).sum())
        return COUNT_WORDS[hidden_runs - 1]
    if kind == "order":  # objects sit in the left and right halves; which one moves in the first half of the clip
        half = fg.shape[2] // 2
        moved = [np.abs(np.diff(_centre_row(part)[:4])).sum() for part in (fg[..., :half], fg[..., half:])]
        side = fg[..., :half] if moved[0] > moved[1] else fg[..., half:]
        pixels = frames[..., :half, :] if moved[0] > moved[1] else frames[..., half:, :]
        return _dominant_colour(pixels[side])
    raise ValueError(kind)


def test_answers_agree_with_the_decoded_frames(dataset):
    qa_dir = dataset / QA_DIR
    test_q = json.loads((qa_dir / "test_q.json").read_text())
    test_a = json.loads((qa_dir / "test_a.json").read_text())
    for question, answer in zip(test_q, test_a, strict=True):
        frames = read_video_frames(find_video_file(qa_dir / "videos", question["video_name"]))
        got = answer_from_pixels(frames, question["question"], answer["type"])
        assert got == answer["answer"], (question, answer)


def test_order_answers_are_named_in_their_question(dataset):
    test_q = json.loads((dataset / QA_DIR / "test_q.json").read_text())
    test_a = json.loads((dataset / QA_DIR / "test_a.json").read_text())
    for question, answer in zip(test_q, test_a, strict=True):
        if answer["type"] == "order":
            named = [c for c in PALETTE if f"the {c} one" in question["question"]]
            assert len(named) == NUM_OPTIONS["order"] and answer["answer"] in named


# ----------------------------------------------------------------------------- chance


def test_chance_levels_are_uniform_guessing_over_each_answer_set():
    levels = chance_levels(["colour", "colour", "size", "count", "direction", "direction"])
    assert levels["colour"] == pytest.approx(1 / len(PALETTE))
    assert levels["size"] == pytest.approx(1 / 2)
    assert levels["count"] == pytest.approx(1 / 3)
    assert levels["appearance"] == pytest.approx((2 / 6 + 1 / 2) / 3)  # question-weighted
    assert levels["temporal"] == pytest.approx((1 / 3 + 2 / 2) / 3)
    with pytest.raises(ValueError, match="unknown question type"):
        chance_levels(["colour", "mood"])


def test_chance_file_matches_the_answer_sets_of_the_data(dataset):
    qa_dir = dataset / QA_DIR
    test_a = json.loads((qa_dir / "test_a.json").read_text())
    assert load_chance(qa_dir) == pytest.approx(chance_levels(a["type"] for a in test_a))
    for answer in test_a:  # every answer lies in its type's answer set, the set chance is uniform over
        if answer["type"] != "order":
            assert answer["answer"] in ANSWER_SETS[answer["type"]]
            assert NUM_OPTIONS[answer["type"]] == len(ANSWER_SETS[answer["type"]])


def test_cli_writes_the_dataset_and_prints_chance(tmp_path, capsys):
    from videopanda.cli import main

    assert main(["data", "synth", str(tmp_path / "out"), "--seed", "7", "--num-train", "6", "--num-test", "9"]) == 0
    printed = capsys.readouterr().out
    assert "21 videos" in printed and "chance: colour 0.167" in printed
    assert (tmp_path / "out" / QA_DIR / "test_a.json").is_file()


def test_every_appearance_question_is_asked_on_every_aspect(tmp_path):
    # 27 videos are one cycle of kind x aspect x appearance question; "order" scenes have no appearance question.
    root = tmp_path / "qa"
    synthesize(root, SynthConfig(seed=3, num_train=0, num_test=27))
    questions = json.loads((root / QA_DIR / "test_q.json").read_text())
    answers = json.loads((root / QA_DIR / "test_a.json").read_text())
    asked = set()
    for question, item in zip(questions, answers, strict=True):
        if COARSE_TYPE[item["type"]] == "appearance":
            video = find_video_file(root / QA_DIR / "videos", question["video_name"])
            height, width = read_video_frames(video).shape[1:3]
            asked.add((item["type"], "tall" if height > width else "wide" if width > height else "square"))
    assert asked == {(t, a) for t in ("colour", "shape", "size") for a in ("tall", "wide", "square")}
