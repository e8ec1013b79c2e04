"""Hostile and careless inputs through the real CLI (issue 22, the command-line half): ids and media names from
data files never become paths outside their directory, damaged files and nonsense settings are one-line errors
before anything heavy runs, one writer per output directory, and a failed write leaves no stray files.

Most cases call ``videopanda.cli.main`` in this process (its one-line handler, no subprocess imports to pay); the
second-writer cases need a second process, and so run ``python -m videopanda`` as one.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_cli_errors import assert_user_error, cli
from videopanda.eval.jsonl import read_jsonl
from videopanda.eval.judge.release_files import item_path, read_release
from videopanda.eval.judge.runner import read_metrics
from videopanda.paths import id_file_stem

NAMES = ("--benchmark-name", "B", "--model-name", "M")
LONG_ID = "x" * 300
HOSTILE_IDS = ["../../evil", "../../victim", "msvd/clip1", "a\\b", "nul\x00id", "ünï/☃", LONG_ID, "..", ".hidden",
               "%41", "A", "v_1"]


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its content (None for a directory)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def write_predictions(path: Path, ids) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": i, "question": f"q {i}?", "answer": "red", "pred": "red"}) + "\n"
                            for i in ids))
    return path


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- 1. ids never become paths


def test_hostile_ids_are_judged_inside_the_output_dir_and_nothing_outside_is_written_or_deleted(tmp_path, capsys):
    root = tmp_path / "root"
    predictions = write_predictions(root / "a" / "b" / "merge.jsonl", HOSTILE_IDS)
    out = root / "a" / "b" / "out"
    (root / "a" / "victim.json").write_text('{"keep": "me"}')  # where "../../victim" of out would point
    (root / "a" / "b" / "victim.json").write_text('{"keep": "me too"}')
    before = tree(root)

    done = cli(capsys, "eval", "judge", predictions, "--backend", "rule", "--output-dir", out, *NAMES)
    assert done.returncode == 0, done.stderr[-2000:]
    after = tree(root)
    assert {k: v for k, v in after.items() if not k.startswith("a/b/out")} == before  # nothing else written
    assert not (root / "a" / "evil.json").exists()
    metrics = read_metrics(out)
    assert (metrics["judged"], metrics["failures"]) == (len(HOSTILE_IDS), 0)
    assert sorted(v["id"] for v in read_jsonl(out / "verdicts.jsonl")) == sorted(HOSTILE_IDS)
    for item_id in HOSTILE_IDS:  # every id has its release file, inside out, holding its question
        path = item_path(out, item_id)
        assert path.parent == out and json.loads(path.read_text())[1]["q"] == f"q {item_id}?"
    assert (out / "v_1.json").is_file() and (out / "A.json").is_file()  # plain ids: the release's own names
    # Read back: every id but the over-long one (hashed, 255-byte names) is its file name decoded.
    assert set(read_release(out)) == set(HOSTILE_IDS) - {LONG_ID} | {id_file_stem(LONG_ID)}
    again = out.parent / "again"
    resumed = cli(capsys, "eval", "judge", predictions, "--backend", "rule", "--output-dir", again,
                  "--resume-from", out, *NAMES)
    assert resumed.returncode == 0 and read_metrics(again)["resumed"]["items"] == len(HOSTILE_IDS) - 1

    # A judge that fails every verdict deletes the earlier verdicts, its own, and nothing outside out.
    failed = cli(capsys, "eval", "judge", predictions, "--backend", "openai", "--base-url",
                 f"http://127.0.0.1:{closed_port()}/v1", "--max-attempts", "1", "--timeout", "5", "--workers", "2",
                 "--output-dir", out, *NAMES)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert read_metrics(out)["failures"] == len(HOSTILE_IDS) and not list(out.glob("*.json"))
    assert {k: v for k, v in tree(root).items() if not k.startswith(("a/b/out", "a/b/again"))} == before


def test_predictions_that_are_not_records_are_one_line_errors_naming_file_and_line(tmp_path, capsys):
    bad = tmp_path / "merge.jsonl"
    for line in ("[1, 2]", '"a string"', "3"):
        bad.write_text(json.dumps({"id": "0", "question": "q", "answer": "a", "pred": "a"}) + f"\n{line}\n{{}}\n")
        assert_user_error(cli(capsys, "eval", "judge", bad, "--backend", "rule", *NAMES),
                          "merge.jsonl:2", "expected a JSON object")
    write_predictions(bad, ["", "1"])
    assert_user_error(cli(capsys, "eval", "judge", bad, "--backend", "rule", *NAMES), "merge.jsonl", "empty id")


# ----------------------------------------------------------------------------- 2. media names stay in their directory


def _qa_files(directory: Path, video_names, answer_ids=None) -> list:
    directory.mkdir(parents=True, exist_ok=True)
    ids = [f"q{i}" for i in range(len(video_names))]
    (directory / "test_q.json").write_text(json.dumps(
        [{"video_name": n, "question": "what moves?", "question_id": f"q{i}"} for i, n in enumerate(video_names)]))
    (directory / "test_a.json").write_text(json.dumps(
        [{"answer": "a square", "question_id": i} for i in (ids if answer_ids is None else answer_ids)]))
    return ["--questions", directory / "test_q.json", "--answers", directory / "test_a.json"]


def test_eval_run_refuses_media_names_outside_the_video_dir_and_duplicate_answers(
    tmp_path, tiny_videopanda_dir, make_video, capsys
):
    make_video("vids/ok.mp4")  # a real video outside the video directory below
    video_dir = tmp_path / "bench" / "sub" / "videos"
    video_dir.mkdir(parents=True)
    make_video("bench/sub/videos/clip0.mp4")
    out = tmp_path / "run"
    for name, problem in (("../../../vids/ok", "'..'"), (str(tmp_path / "vids" / "ok.mp4"), "absolute"),
                          ("clip\x00.mp4", "NUL")):
        source = _qa_files(tmp_path / "q", ["clip0", name])
        assert_user_error(cli(capsys, "eval", "run", tiny_videopanda_dir, *source, "--video-dir", video_dir,
                              "--output-dir", out), "test_q.json", "q1", problem)
    assert not out.exists()  # refused before anything was loaded or written
    source = _qa_files(tmp_path / "q", ["clip0", "clip0"], answer_ids=["q0", "q1", "q1"])
    assert_user_error(cli(capsys, "eval", "run", tiny_videopanda_dir, *source, "--video-dir", video_dir,
                          "--output-dir", out), "test_a.json", "'q1'", "two answers")
    for bad in ("-1", "0"):
        assert_user_error(cli(capsys, "eval", "run", tiny_videopanda_dir, *source, "--video-dir", video_dir,
                              "--max-samples", bad), "--max-samples", "at least 1", code=2)


def test_training_annotations_naming_media_outside_the_media_root_are_skippable_errors(tmp_path):
    from videopanda.data.dataset import AnnotationError, parse_item

    talk = [{"from": "human", "value": "<video>\nWhat?"}, {"from": "gpt", "value": "a square"}]
    assert parse_item({"video": "valley/v.mp4", "conversations": talk}, tmp_path, tmp_path).video == \
        tmp_path / "valley" / "v.mp4"
    for item in ({"video": "../v.mp4"}, {"video": "/etc/hostname"}, {"image": "a/../../b.png"}):
        with pytest.raises(AnnotationError, match="media root"):
            parse_item({**item, "conversations": talk}, tmp_path, tmp_path)


# ----------------------------------------------------------------------------- 4. damaged weights, bad settings


def test_damaged_weight_files_are_one_line_errors_naming_the_file(tmp_path, tiny_videopanda_dir, make_video, capsys):
    video = make_video("clip.mp4")
    weights = (tiny_videopanda_dir / "model.safetensors").read_bytes()
    damage = {"truncated": weights[: len(weights) // 2], "empty": b"", "garbage": b"\xff" * 16 + weights[16:]}
    for kind, content in damage.items():
        model = tmp_path / kind
        model.mkdir()
        for file in tiny_videopanda_dir.iterdir():
            (model / file.name).symlink_to(file)
        (model / "model.safetensors").unlink()
        (model / "model.safetensors").write_bytes(content)
        assert_user_error(cli(capsys, "ask", "--model", model, "--video", video, "what?"),
                          f"{model / 'model.safetensors'}", "corrupt or truncated", "copy it again")


@pytest.fixture
def train_data(tmp_path) -> list[str]:
    """Overrides naming data that exists, so that only the setting under test can stop a run."""
    (tmp_path / "a.json").write_text("[]")
    return [f"data.annotation_files=[{tmp_path / 'a.json'}]", f"data.media_root={tmp_path}",
            f"output_dir={tmp_path / 'run'}"]


def test_train_refuses_settings_that_train_nothing_before_any_model_loads(tmp_path, train_data, capsys):
    cases = {"max_steps=0": "trains nothing", "max_steps=-2": "trains nothing", "optim.lr=-1e-3": "optim.lr",
             "optim.lr=.nan": "optim.lr", "optim.group_lr={visual: 0}": "optim.group_lr.visual",
             "num_epochs=0": "num_epochs", "optim.warmup_ratio=2": "optim.warmup_ratio", "optim.eps=-1": "optim.eps",
             "data.max_samples=0": "data.max_samples", "model.lora={dropout: 1.5}": "model.lora.dropout"}
    for override, fragment in cases.items():
        assert_user_error(cli(capsys, "train", "--config", "configs/small/prealign.yaml", *train_data, override),
                          fragment)
    assert not (tmp_path / "run").exists()  # no stage.json, nothing: refused when the config loaded


# ----------------------------------------------------------------------------- 5. one writer per output directory


def start(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "videopanda", *map(str, argv)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"{what}: the first process ended: {process.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.2)


def test_a_second_judge_is_refused_and_a_killed_ones_lock_does_not_block_the_resume(
    tmp_path, scripted_openai_server, capsys
):
    predictions = write_predictions(tmp_path / "merge.jsonl", ["0", "1", "2"])
    server = scripted_openai_server(lambda body, n: ("hang", 60))
    first = start("eval", "judge", predictions, "--base-url", server.base_url, "--workers", "1", "--max-attempts",
                  "1", "--timeout", "60", "--output-dir", tmp_path / "out", *NAMES)
    try:
        wait_for(lambda: server.requests, first, "the first judge's request")
        second = cli(capsys, "eval", "judge", predictions, "--backend", "rule", "--output-dir", tmp_path / "out",
                     *NAMES)
        assert_user_error(second, "in use", f"pid {first.pid}: eval judge", "another output directory")
    finally:
        first.kill()  # SIGKILL: no cleanup runs, as in a crash
        first.wait(timeout=30)
    resumed = cli(capsys, "eval", "judge", predictions, "--backend", "rule", "--output-dir", tmp_path / "out", *NAMES)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert read_metrics(tmp_path / "out")["judged"] == 3


def test_a_second_run_of_one_shard_is_refused_while_other_shards_run(
    tmp_path, scripted_openai_server, make_video, capsys
):
    make_video("videos/clip0.mp4")
    source = [*_qa_files(tmp_path, ["clip0", "clip0"]), "--video-dir", tmp_path / "videos"]
    server = scripted_openai_server(lambda body, n: ("hang", 60) if n == 0 else ("ok", "a square"))
    endpoint = ("--endpoint", server.base_url, "--endpoint-model", "m", "--workers", "1", "--max-attempts", "1",
                "--output-dir", tmp_path / "out")
    first = start("eval", "run", *endpoint, *source, "--num-shards", "2", "--shard-id", "0", "--timeout", "60")
    try:
        wait_for(lambda: server.requests, first, "the first run's request")
        assert_user_error(cli(capsys, "eval", "run", *endpoint, *source, "--num-shards", "2", "--shard-id", "0"),
                          "in use", f"pid {first.pid}: eval run")
        other = cli(capsys, "eval", "run", *endpoint, *source, "--num-shards", "2", "--shard-id", "1")
        assert other.returncode == 0, other.stderr[-2000:]
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    assert [r["id"] for r in read_jsonl(tmp_path / "out" / "2_1.json")] == ["q1"]


def test_a_second_train_is_refused_and_a_dead_holders_lock_is_taken_over(tmp_path, train_data, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from videopanda.files import OutputLock; "
                               f"OutputLock({str(out)!r}, 'train').__enter__(); print('held', flush=True); "
                               "time.sleep(120)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        train = ("train", "--config", "configs/small/prealign.yaml", *train_data, f"model.init={tmp_path / 'llm'}")
        assert_user_error(cli(capsys, *train), "in use", f"pid {holder.pid}: train")
    finally:
        holder.kill()
        holder.wait(timeout=30)
    # The lock is free again: the run gets past it, to the (absent) LLM it was given.
    assert_user_error(cli(capsys, *train), "llm", "not found")


# ----------------------------------------------------------------------------- 5. a failed write leaves no stray files


def test_a_full_disk_leaves_no_temporary_files(tmp_path, scripted_openai_server, make_video, monkeypatch, capsys):
    def full_disk(self, data, *args, **kwargs):
        with open(self, "w") as f:
            f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    make_video("videos/clip0.mp4")
    server = scripted_openai_server(lambda body, n: ("ok", "a square"))
    run = ("eval", "run", "--endpoint", server.base_url, "--endpoint-model", "m", *_qa_files(tmp_path, ["clip0"]),
           "--video-dir", tmp_path / "videos", "--output-dir", tmp_path / "out")
    judge = ("eval", "judge", tmp_path / "out" / "merge.jsonl", "--backend", "rule", *NAMES)
    with monkeypatch.context() as patched:
        patched.setattr(Path, "write_text", full_disk)
        assert_user_error(cli(capsys, *run), "No space left on device")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".videopanda-shard-1_0.lock"]
    assert cli(capsys, *run).returncode == 0
    with monkeypatch.context() as patched:
        patched.setattr(Path, "write_text", full_disk)
        assert_user_error(cli(capsys, *judge), "No space left on device")
    assert sorted(p.name for p in (tmp_path / "out" / "judge_rule").iterdir()) == [".videopanda.lock",
                                                                                   "judge_cache.jsonl"]
    assert cli(capsys, *judge).returncode == 0
