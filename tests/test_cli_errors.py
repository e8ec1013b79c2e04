"""Bad inputs through the real CLI (issue 15): a user error is one line on stderr and a non-zero exit, never a
traceback; Ctrl-C is one line saying what was kept, exit 130; an empty or partial result never exits 0.

Most cases call ``videopanda.cli.main`` in this process (``cli``: exit code, stdout and stderr as a finished
process would give them, without a subprocess's seconds of imports); what only a fresh process shows (a signal,
an import-light package, the CLI's own registrations) runs ``python -m videopanda`` as one (``run_cli``).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from videopanda.cli import KEPT_ON_INTERRUPT, build_parser, main
from videopanda.config import ConfigError
from videopanda.eval.judge.runner import read_metrics


def run_cli(*argv: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "videopanda", *map(str, argv)], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def cli(capsys, *argv) -> subprocess.CompletedProcess:
    """``videopanda ARGV`` in this process, as a finished process (exit code, stdout, stderr).

    Log records reach stderr, as the process's logging set-up would write them (here pytest's handlers hold the
    root logger, so ``main``'s ``basicConfig`` adds none). A ``SystemExit`` ends it as the interpreter would end
    ``python -m videopanda``: a message goes to stderr with exit 1 (argparse's own exits carry their code).
    """
    handler = logging.StreamHandler(sys.stderr)  # capsys's stream while the test runs
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            code = exit_.code or 0
        else:
            print(exit_.code, file=sys.stderr)
            code = 1
    finally:
        logging.getLogger().removeHandler(handler)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, out, err)


def assert_user_error(done: subprocess.CompletedProcess, *fragments: str, code: int = 1) -> str:
    """Exit ``code``, no traceback, exactly one error line on stderr holding every fragment; returns that line."""
    assert done.returncode == code, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, done.stderr[-2000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


# ----------------------------------------------------------------------------- CLI-wide mechanisms


def test_version_and_help_of_every_subcommand(capsys):
    from videopanda import __version__

    done = cli(capsys, "--version")
    assert done.returncode == 0 and done.stdout.strip() == f"videopanda {__version__}"

    def walk(parser):
        for action in parser._actions:
            if hasattr(action, "choices") and isinstance(action.choices, dict):
                for sub in action.choices.values():
                    yield sub
                    yield from walk(sub)

    for sub in walk(build_parser()):
        assert sub.description, f"{sub.prog} has no description"
        text = sub.format_help()
        assert "--debug" in text, sub.prog
        for action in sub._actions:
            if action.option_strings and action.default not in (None, False, "==SUPPRESS=="):
                help_of = sub.formatter_class(sub.prog)._get_help_string(action)
                assert "default" in help_of, f"{sub.prog} {action.option_strings[0]}: default not shown"


def test_config_typo_is_one_line_and_debug_after_the_subcommand_shows_the_traceback(tmp_path, capsys):
    line = assert_user_error(cli(capsys, "train", "--config", "configs/small/prealign.yaml", "optim.lrr=1"),
                             "optim.lrr", "known:")
    assert line.startswith("videopanda train: error:")
    with pytest.raises(ConfigError, match="optim.lrr"):  # the error propagates: the interpreter prints its traceback
        main(["train", "--config", "configs/small/prealign.yaml", "optim.lrr=1", "--debug"])
    assert_user_error(cli(capsys, "train", "--config", tmp_path / "absent.yaml"), "absent.yaml")


# ``python -m videopanda`` started as a terminal starts it, Ctrl-C raising KeyboardInterrupt. Inherited, SIGINT
# may be ignored: a non-interactive shell ignores it in its background jobs (``pytest &``), and Python then keeps
# it ignored, so the child would judge every item and exit 1 (this test's one flake, reproduced under
# ``trap '' INT``).
AS_FROM_A_TERMINAL = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                      "runpy.run_module('videopanda', run_name='__main__', alter_sys=True)")


@pytest.mark.slow  # a subprocess and a judge request left hanging
def test_interrupted_judge_says_what_was_kept_and_exits_130(tmp_path, scripted_openai_server):
    predictions = tmp_path / "merge.jsonl"
    predictions.write_text("".join(json.dumps({"id": str(i), "question": "q?", "answer": "a", "pred": "a"}) + "\n"
                                   for i in range(3)))
    server = scripted_openai_server(lambda body, n: ("hang", 5))
    child = subprocess.Popen(
        [sys.executable, "-c", AS_FROM_A_TERMINAL, "eval", "judge", str(predictions), "--backend", "openai",
         "--base-url", server.base_url, "--workers", "1", "--timeout", "3", "--max-attempts", "1",
         "--benchmark-name", "B", "--model-name", "M"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not server.requests and time.monotonic() < deadline:  # wait until a judge request is in flight
        time.sleep(0.2)
    assert server.requests, "the judge never sent a request"
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 130 and "Traceback" not in stderr, stderr[-2000:]
    assert KEPT_ON_INTERRUPT["eval judge"] in stderr.strip().splitlines()[-1]


# ----------------------------------------------------------------------------- empty, missing or failed results


def _predictions(path: Path, n: int = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": str(i), "question": "q?", "answer": "red", "pred": "red"}) + "\n"
                            for i in range(n)))
    return path


def test_judge_refuses_missing_or_empty_predictions_and_fails_when_nothing_was_judged(tmp_path, capsys):
    names = ("--benchmark-name", "B", "--model-name", "M")
    assert_user_error(cli(capsys, "eval", "judge", tmp_path / "nonexistent.jsonl", "--backend", "rule", *names),
                      "nonexistent.jsonl", "not found")
    (tmp_path / "empty.jsonl").write_text("")
    assert_user_error(cli(capsys, "eval", "judge", tmp_path / "empty.jsonl", "--backend", "rule", *names),
                      "empty.jsonl", "no predictions")
    # Names come from flags or run_settings.json, never from parent directory names.
    assert_user_error(cli(capsys, "eval", "judge", _predictions(tmp_path / "p" / "merge.jsonl"), "--backend", "rule"),
                      "--benchmark-name and --model-name")
    # A judge that cannot be reached: every item fails, so the command fails (metrics.jsonl still written).
    done = cli(capsys, "eval", "judge", _predictions(tmp_path / "merge.jsonl"), "--backend", "openai", "--base-url",
                   "http://127.0.0.1:9/v1", "--max-attempts", "2", "--timeout", "2", "--workers", "1",
                   "--output-dir", tmp_path / "out", *names)
    assert done.returncode == 1 and "Traceback" not in done.stderr and "could not be judged" in done.stderr
    results = read_metrics(tmp_path / "out")
    assert results["judged"] == 0 and results["failures"] == 2
    failures = [json.loads(line) for line in (tmp_path / "out" / "failures.jsonl").read_text().splitlines()]
    assert [f["attempts"] for f in failures] == [2, 2]  # both HTTP attempts counted


def test_five_criteria_and_eval_run_refuse_inputs_that_would_answer_nothing(tmp_path, tiny_videopanda_dir, make_video,
                                                                           capsys):
    assert_user_error(cli(capsys, "eval", "five-criteria", "--data-dir", "/nope", "--output-dir", tmp_path / "o",
                              "--backend", "rule"), "/nope", "not found")
    (tmp_path / "bench").mkdir()
    assert_user_error(cli(capsys, "eval", "five-criteria", "--data-dir", tmp_path / "bench", "--output-dir",
                              tmp_path / "o", "--backend", "rule"), "merge.jsonl", "--model-dir")
    make_video("clip0.mp4")
    (tmp_path / "test_q.json").write_text(json.dumps([{"video_name": "clip0", "question": "what?", "question_id": 1}]))
    (tmp_path / "test_a.json").write_text(json.dumps([{"answer": "a square", "question_id": 1}]))
    source = ("--questions", tmp_path / "test_q.json", "--answers", tmp_path / "test_a.json", "--video-dir", tmp_path)
    assert_user_error(cli(capsys, "eval", "run", tiny_videopanda_dir, *source, "--batch-size", "0", "--output-dir",
                              tmp_path / "run"), "batch size")


# ----------------------------------------------------------------------------- training flags and stage chains


def test_train_refuses_shared_stage_dirs_idle_data_root_and_missing_deepspeed_before_training(tmp_path, capsys):
    assert_user_error(cli(capsys, "train", "--stages", "pretrain,finetune", "--config-dir", "configs/small",
                              f"output_dir={tmp_path / 'run'}"), "share output_dir")
    assert_user_error(cli(capsys, "train", "--config", "configs/small/prealign.yaml", "--data-root", tmp_path),
                      "--data-root", "change nothing")
    assert_user_error(cli(capsys, "train", "--config", "configs/prealign.yaml", "--data-root", tmp_path / "nope"),
                      "nope", "not a directory")
    if importlib.util.find_spec("deepspeed") is None:
        assert_user_error(cli(capsys, "train", "--config", "configs/finetune.yaml", "--data-root", tmp_path),
                          "deepspeed package")
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- Python API


def test_readme_python_example_runs(tiny_videopanda_dir, make_video, tmp_path, monkeypatch):
    from conftest import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "quickstart").mkdir()
    (tmp_path / "quickstart" / "model").symlink_to(tiny_videopanda_dir)
    make_video("a.mp4")
    make_video("b.mp4", color=(0, 0, 255))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert type(namespace["model"]).__name__ == "VideoPandaForCausalLM"
    import videopanda

    exported = {"VideoPandaForCausalLM", "VideoPandaConfig", "VideoPandaProcessor", "VideoPandaPredictor"}
    assert exported <= set(dir(videopanda))
    assert videopanda.VideoPandaConfig.model_type == "videopanda"
    assert "torch" not in subprocess.run([sys.executable, "-c", "import sys, videopanda; print(sorted(sys.modules))"],
                                         capture_output=True, text=True, check=True).stdout


# ----------------------------------------------------------------------------- misleading messages, input edge cases


def test_ask_and_convert_name_the_real_problem(tmp_path, tiny_videopanda_dir, make_video, capsys):
    video = make_video("clip.mp4")
    ask = ("ask", "--max-new-tokens", "2", "--video", video)
    assert_user_error(cli(capsys, *ask, "--model", tmp_path / "missing_dir", "what?"), "missing_dir", "not found")
    assert_user_error(cli(capsys, *ask, "--model", tiny_videopanda_dir, "   "), "question is empty")
    assert_user_error(cli(capsys, *ask, "--model", tiny_videopanda_dir, "--device", "cuda", "what?"),
                      "no CUDA device", "--device cpu")
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00not a video" * 64)
    assert_user_error(cli(capsys, "ask", "--video", tmp_path / "corrupt.mp4", "--model", tiny_videopanda_dir, "what?"),
                      "corrupt.mp4")
    # A fresh process, where nothing but the CLI has imported the package: its config must be registered there.
    done = run_cli(*ask, "--model", tiny_videopanda_dir, "--json", "Что <image> движется?")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Что <image> движется?" in done.stdout  # not \\u-escaped; and the typed tag did not crash
    assert "to instantiate a model of type" not in done.stderr  # the config is registered with AutoConfig
    assert_user_error(cli(capsys, "convert", "--release", tmp_path / "nonexistent", "--out", tmp_path / "o"),
                      "nonexistent", "not found")
    assert_user_error(cli(capsys, "convert", "--release", tiny_videopanda_dir, "--out", tmp_path / "o"),
                      "not a release checkpoint", "already a Video-Panda model")
    assert_user_error(cli(capsys, "convert", "--release", tmp_path, "--out", tmp_path / "o"),
                      "not a release checkpoint", "no config.json")


def test_ctrl_c_in_chat_returns_to_the_prompt(tiny_videopanda_dir, make_video):
    import io

    from videopanda.cli.chat import chat_loop
    from videopanda.inference import GenerationConfig, VideoPandaPredictor

    predictor = VideoPandaPredictor.from_pretrained(tiny_videopanda_dir, GenerationConfig(max_new_tokens=2))
    answer = predictor.answer
    calls = iter([KeyboardInterrupt, None])

    def interrupted_once(*args, **kwargs):  # Ctrl-C arriving during the first answer's generation
        if next(calls) is KeyboardInterrupt:
            raise KeyboardInterrupt
        return answer(*args, **kwargs)

    predictor.answer = interrupted_once
    replies = iter([KeyboardInterrupt, "first?", "second?", "/quit"])

    def read(prompt: str) -> str:
        reply = next(replies)
        if reply is KeyboardInterrupt:  # Ctrl-C at the prompt
            raise KeyboardInterrupt
        return reply

    out = io.StringIO()
    assert chat_loop(predictor, make_video("clip.mp4"), read, out) == 1  # the second question answered
    assert "(answer interrupted)" in out.getvalue() and out.getvalue().count("videopanda> ") == 1
