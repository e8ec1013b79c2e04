"""The OpenAI-endpoint judge against real scripted HTTP servers: retries, failures, cache and resume."""

from __future__ import annotations

import json

import pytest

from videopanda.eval.jsonl import read_jsonl
from videopanda.eval.judge.base import JudgeCallError, LLMJudge, QAItem
from videopanda.eval.judge.cache import JudgeCache
from videopanda.eval.judge.openai_backend import OpenAIBackend, OpenAIJudgeConfig
from videopanda.eval.judge.prompts import QA
from videopanda.eval.judge.runner import judge_items, run_judge

YES = "{'pred': 'yes', 'score': 4}"
NO = "{'pred': 'no', 'score': 1}"


def backend(server, **overrides) -> OpenAIBackend:
    params = dict(model="judge-x", base_url=server.base_url, timeout_s=0.5, max_attempts=3, backoff_s=0.01,
                  max_backoff_s=0.02)
    params.update(overrides)
    return OpenAIBackend(OpenAIJudgeConfig(**params))


def items(n: int) -> list[QAItem]:
    return [QAItem(str(i), f"question {i}?", "red" if i % 2 else "blue", f"pred {i}") for i in range(n)]


def test_request_carries_prompt_model_and_greedy_settings(scripted_openai_server):
    server = scripted_openai_server(lambda body, n: ("ok", YES))
    assert backend(server).complete("SYS", "USER") == YES
    body = server.requests[0]
    assert body["model"] == "judge-x" and body["temperature"] == 0 and body["seed"] == 0
    assert body["messages"] == [{"role": "system", "content": "SYS"}, {"role": "user", "content": "USER"}]
    backend(server, seed=None).complete("SYS", "USER")
    assert "seed" not in server.requests[1]  # endpoints without seed support get none


def test_rate_limit_then_success_is_retried(scripted_openai_server):
    server = scripted_openai_server(lambda body, n: ("status", 429) if n < 2 else ("ok", YES))
    assert backend(server).complete("s", "u") == YES
    assert len(server.requests) == 3


@pytest.mark.parametrize("script", [lambda b, n: ("status", 500), lambda b, n: ("hang", 1.5)], ids=["500", "hang"])
def test_server_errors_and_timeouts_retry_then_fail(scripted_openai_server, script):
    server = scripted_openai_server(script)
    with pytest.raises(JudgeCallError):
        backend(server).complete("s", "u")
    assert len(server.requests) == 3  # max_attempts, no more


def test_client_errors_are_not_retried(scripted_openai_server):
    server = scripted_openai_server(lambda body, n: ("status", 400))
    with pytest.raises(JudgeCallError):
        backend(server).complete("s", "u")
    assert len(server.requests) == 1


def test_malformed_replies_are_retried_then_recorded_never_counted(scripted_openai_server, tmp_path):
    # Item "0": garbage every time; item "1": a non-dict reply once, then a valid one; the rest valid.
    def script(body, n):
        user = body["messages"][1]["content"]
        if "question 0?" in user:
            return "ok", "I think it is correct!"
        if "question 1?" in user and not any("question 1?" in r["messages"][1]["content"] for r in server.requests[:n]):
            return "garbage", "<html>not json</html>"
        return "ok", YES if "Correct Answer: red" in user else NO

    server = scripted_openai_server(script)
    judge = LLMJudge(backend(server), parse_attempts=3)
    results = run_judge(items(4), tmp_path / "judge", judge, QA, workers=2, meta={"benchmark": "B", "model": "M"})
    asked = [r["messages"][1]["content"] for r in server.requests]
    assert sum("question 0?" in u for u in asked) == 3  # parse_attempts
    assert (results["failures"], results["judged"], results["yes"], results["no"]) == (1, 3, 2, 1)
    assert results["accuracy"] == pytest.approx(2 / 3) and results["accuracy_all"] == pytest.approx(2 / 4)
    failures = read_jsonl(tmp_path / "judge" / "failures.jsonl")
    assert [f["id"] for f in failures] == ["0"] and failures[0]["raw"] == "I think it is correct!"
    assert results["judge"] == {"backend": "openai", "model": "judge-x", "prompt": "qa", "prompt_hash": QA.hash,
                                "temperature": 0.0, "seed": 0, "extra": {}}
    # The release's per-question files and combined output_json, for judged items only.
    assert json.loads((tmp_path / "judge" / "1.json").read_text()) == [
        {"pred": "yes", "score": 4.0}, {"q": "question 1?", "a": "red", "pred": "pred 1"}]
    assert not (tmp_path / "judge" / "0.json").exists()
    assert sorted(p.name for p in (tmp_path / "judge").glob("*.json")) == ["1.json", "2.json", "3.json"]


def test_rerun_and_resume_cost_nothing_twice(scripted_openai_server, tmp_path):
    server = scripted_openai_server(lambda body, n: ("ok", YES))
    judge = LLMJudge(backend(server))
    cache_path = tmp_path / "cache.jsonl"
    cache = JudgeCache(cache_path)
    judge_items(items(3), judge, QA, cache, workers=2)  # "interrupted" after 3 of 5 items
    cache.close()
    with cache_path.open("a") as f:
        f.write('{"key": "torn')  # a crash mid-write
    assert len(server.requests) == 3
    results = run_judge(items(5), tmp_path / "out", judge, QA, cache_path=cache_path)
    assert len(server.requests) == 5 and results["judged"] == 5
    run_judge(items(5), tmp_path / "out", judge, QA, cache_path=cache_path)
    assert len(server.requests) == 5
    other = LLMJudge(backend(server, model="judge-y"))  # another judge model is another key
    run_judge(items(1), tmp_path / "out_y", other, QA, cache_path=cache_path)
    assert len(server.requests) == 6


def test_failures_are_not_cached(scripted_openai_server, tmp_path):
    server = scripted_openai_server(lambda body, n: ("status", 500) if n < 2 else ("ok", NO))
    judge = LLMJudge(backend(server, max_attempts=2))
    first = run_judge(items(1), tmp_path / "a", judge, QA, cache_path=tmp_path / "c.jsonl")
    assert first["failures"] == 1 and first["accuracy"] is None and first["accuracy_all"] == 0
    second = run_judge(items(1), tmp_path / "a", judge, QA, cache_path=tmp_path / "c.jsonl")
    assert second["failures"] == 0 and second["no"] == 1 and len(server.requests) == 3


def test_a_verdict_that_gave_up_records_every_request_sent(scripted_openai_server, tmp_path):
    server = scripted_openai_server(lambda body, n: ("status", 503))
    results = run_judge(items(1), tmp_path / "judge", LLMJudge(backend(server, max_attempts=3)), QA, workers=1,
                        meta={"benchmark": "B", "model": "M"})
    assert results["failures"] == 1 and len(server.requests) == 3
    assert [f["attempts"] for f in read_jsonl(tmp_path / "judge" / "failures.jsonl")] == [3]
