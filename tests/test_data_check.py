"""`videopanda data check` on a small data root of real videos in the seed's layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from conftest import moving_square_frames
from videopanda.cli import main
from videopanda.data.check import check_dataset
from videopanda.data.video_writer import write_video

QA = Path("eval/GPT_Zero_Shot_QA")


def _conversation(question: str = "What moves?", answer: str = "A square.") -> list[dict]:
    return [{"from": "human", "value": f"<video>\n{question}"}, {"from": "gpt", "value": answer}]


def _video(path: Path, seed: int = 0) -> str:
    write_video(path, moving_square_frames(12, 32, 48, seed=seed), fps=6)
    return path.name


def _dump(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


@pytest.fixture
def data_root(tmp_path) -> Path:
    """train: valley (mp4, webm, gif) + videochatgpt_tune (avi, mkv, png);
    eval: MSVD (.avi) and Activitynet (v_ prefix, .mkv)."""
    root = tmp_path / "data"
    train = root / "train"
    valley = [_video(train / "valley" / f"v{i}{ext}", seed=i) for i, ext in enumerate([".mp4", ".webm", ".gif"])]
    _dump(train / "train_json" / "valley.json", [
        {"id": "a", "video": f"valley/{valley[0]}", "conversations": _conversation()},
        {"id": "b", "video": f"valley/{valley[1]}", "conversations": _conversation()},
        {"id": "c", "video": f"valley/{valley[2]}", "conversations": _conversation()},
    ])
    tune = [_video(train / "videochatgpt_tune" / f"t{i}{ext}", seed=5 + i) for i, ext in enumerate([".avi", ".mkv"])]
    Image.new("RGB", (40, 30), (200, 10, 10)).save(train / "videochatgpt_tune" / "still.png")
    _dump(train / "train_json" / "videochatgpt.json", [
        {"id": "d", "video": f"videochatgpt_tune/{tune[0]}", "start": 0.0, "end": 1.5,
         "conversations": _conversation()},
        {"id": "e", "video": f"videochatgpt_tune/{tune[1]}", "conversations": _conversation()},
        {"id": "f", "image": "videochatgpt_tune/still.png",
         "conversations": [{"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "Red."}]},
        {"id": "g", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]},
    ])
    for name, videos in (("MSVD", ["clip1.avi", "clip2.avi"]), ("Activitynet", ["v_abc.mkv"])):
        qa_dir = root / QA / f"{name}_Zero_Shot_QA"
        for i, video in enumerate(videos):
            _video(qa_dir / "videos" / video, seed=10 + i)
        stems = [Path(v).stem.removeprefix("v_") for v in videos]
        _dump(qa_dir / "test_q.json", [{"video_name": s, "question": "What?", "question_id": f"{s}_q"} for s in stems])
        _dump(qa_dir / "test_a.json", [{"answer": "square", "type": 0, "question_id": f"{s}_q"} for s in stems])
    return root


def test_clean_data_root_passes_and_lists_its_parts(data_root):
    report = check_dataset(data_root, workers=0)
    assert report.ok, report.summary()
    assert report.samples == 7 + 3 and report.media_checked == 6 + 3  # the text-only sample decodes nothing
    assert f"{QA}/MSVD_Zero_Shot_QA" in report.found and "train/valley" in report.found
    assert report.missing == [f"{QA}/MSRVTT_Zero_Shot_QA", f"{QA}/TGIF_Zero_Shot_QA", f"{QA}/Synth_Zero_Shot_QA"]


def test_a_path_relative_to_data_root_is_reported_as_training_would_miss_it(data_root):
    """Training resolves media against DATA_ROOT/train only: the check must not accept what training skips."""
    _dump(data_root / "train/train_json/valley.json", [
        {"id": "c", "video": "train/valley/v2.gif", "conversations": _conversation()},
    ])
    report = check_dataset(data_root, workers=0)
    [problem] = report.problems
    assert problem.kind == "missing" and problem.source.endswith("valley.json#0")
    assert "DATA_ROOT/train" in problem.reason and problem.media == str(data_root / "train/train/valley/v2.gif")


def test_truncated_and_deleted_videos_are_named_with_their_samples(data_root, tmp_path):
    cut = data_root / "train/valley/v0.mp4"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    (data_root / QA / "MSVD_Zero_Shot_QA/videos/clip2.avi").unlink()
    report = check_dataset(data_root, workers=2, write_clean=tmp_path / "clean")
    valley_json = str(data_root / "train/train_json/valley.json")
    msvd_q = str(data_root / QA / "MSVD_Zero_Shot_QA/test_q.json")
    assert [(p.kind, p.source) for p in report.problems] == [
        ("missing", f"{msvd_q}#1"),
        ("corrupt", f"{valley_json}#0"),
    ]
    assert report.problems[1].media == str(cut) and str(cut) in report.problems[1].reason
    assert "clip2" in report.problems[0].reason
    assert report.media_failed == 1 and f"{report.media_checked - 1} decoded, 1 failed" in report.summary()

    clean = tmp_path / "clean"
    assert [item["id"] for item in json.loads((clean / "train/train_json/valley.json").read_text())] == ["b", "c"]
    assert len(json.loads((clean / "train/train_json/videochatgpt.json").read_text())) == 4
    msvd = clean / QA / "MSVD_Zero_Shot_QA"
    assert [q["question_id"] for q in json.loads((msvd / "test_q.json").read_text())] == ["clip1_q"]
    assert [a["question_id"] for a in json.loads((msvd / "test_a.json").read_text())] == ["clip1_q"]
    # the clean copy is a data root of its own (media folders linked): it checks clean
    assert check_dataset(clean, workers=0).ok


def test_malformed_json_and_bad_items_are_reported_by_path(data_root):
    bad_file = data_root / "train/train_json/broken.json"
    bad_file.write_text('[{"id": "x", "video": ')
    _dump(data_root / "train/train_json/items.json", [
        {"id": "y", "video": "valley/v1.webm", "conversations": "not a list"},
        {"id": "z", "video": "valley/nowhere.mp4", "conversations": _conversation()},
    ])
    (data_root / QA / "Activitynet_Zero_Shot_QA/test_a.json").write_text("[]")  # no answer for a question
    report = check_dataset(data_root, workers=0)
    items = str(data_root / "train/train_json/items.json")
    by_source = {p.source: p for p in report.problems}
    assert set(by_source) == {
        str(data_root / QA / "Activitynet_Zero_Shot_QA/test_q.json"), str(bad_file), f"{items}#0", f"{items}#1",
    }
    assert by_source[str(bad_file)].kind == "annotation" and "not JSON" in by_source[str(bad_file)].reason
    assert by_source[f"{items}#0"].kind == "annotation" and "conversations" in by_source[f"{items}#0"].reason
    assert by_source[f"{items}#1"].kind == "missing"
    assert "no answer" in by_source[str(data_root / QA / "Activitynet_Zero_Shot_QA/test_q.json")].reason


def test_cli_exit_code_and_json_report_on_a_partial_root(data_root, tmp_path, capsys):
    (data_root / QA / "MSVD_Zero_Shot_QA/videos/clip1.avi").write_bytes(b"garbage" * 50)
    report_path = tmp_path / "report.json"
    assert main(["data", "check", str(data_root / "eval"), "--workers", "0"]) == 1  # nothing of the layout there
    assert main(["data", "check", str(data_root), "--workers", "0", "--json", str(report_path)]) == 1
    report = json.loads(report_path.read_text())
    assert report["ok"] is False and [p["media"] for p in report["problems"]] == [
        str(data_root / QA / "MSVD_Zero_Shot_QA/videos/clip1.avi")
    ]
    assert capsys.readouterr().out.rstrip().endswith("\n1 problem")
    for part in ("eval", "train/valley", "train/videochatgpt_tune"):  # train annotations only: still a valid root
        for path in sorted((data_root / part).rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        (data_root / part).rmdir()
    (data_root / "train/train_json/videochatgpt.json").unlink()
    _dump(data_root / "train/train_json/valley.json", [{"id": "t", "conversations": [
        {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]}])
    assert main(["data", "check", str(data_root), "--workers", "0"]) == 0
