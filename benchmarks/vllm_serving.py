"""vLLM with our plugin against `videopanda serve` and `eval run`: requests/s and eval questions/s, one run.

The same model directory, machine and precision for both. Rows:

* requests/s with 1, 4, 8 and 16 concurrent clients (openai SDK threads), each request a ``video_url``
  chat (``file://``) about one of the QA set's videos, ``max_tokens`` fixed, greedy;
* eval questions/s of one QA set: ``eval run --endpoint`` against vLLM (``--workers 16``) and the local
  ``eval run`` batched (``--batch-size 8``), with the answers they agree on.

    python benchmarks/vllm_serving.py --vllm-python .venv-vllm/bin/python \\
        --model quickstart_out/model --qa-dir quickstart_out/data/eval/GPT_Zero_Shot_QA/Synth_Zero_Shot_QA

Prints the load average before and after (other work on the machine skews every figure).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai
from client_threads import run_client_threads

from videopanda.cli import main as cli_main
from videopanda.data.decode import find_video_file
from videopanda.eval.jsonl import read_jsonl

CLIENTS = (1, 4, 8, 16)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: list[str], url: str, log: Path, timeout_s: float = 600) -> tuple[subprocess.Popen, float]:
    """A server process and the seconds until its /v1/models answered."""
    began = time.perf_counter()
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    client = openai.OpenAI(base_url=url, api_key="EMPTY", max_retries=0, timeout=10)
    while True:
        try:
            client.models.list()
            return server, time.perf_counter() - began
        except openai.APIConnectionError:
            if server.poll() is not None or time.perf_counter() - began > timeout_s:
                server.kill()
                raise SystemExit(f"server did not start: {' '.join(command)}\n{log.read_text()[-3000:]}") from None
            time.sleep(1)


def stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()


def requests_per_s(url: str, model: str, clients: int, jobs: list[tuple[Path, str]], max_tokens: int) -> float:
    """``jobs`` (video, question) shared by ``clients`` threads; requests per second of wall time."""
    client = openai.OpenAI(base_url=url, api_key="EMPTY", max_retries=0, timeout=600)

    def call(job: tuple[Path, str]) -> None:
        video, question = job
        client.chat.completions.create(model=model, max_tokens=max_tokens, temperature=0, messages=[
            {"role": "user", "content": [{"type": "video_url", "video_url": {"url": video.resolve().as_uri()}},
                                         {"type": "text", "text": question}]}])

    wall, _ = run_client_threads(clients, jobs, call)
    return len(jobs) / wall


def qa_jobs(qa_dir: Path, count: int) -> tuple[list[tuple[Path, str]], Path]:
    """``count`` distinct questions over the QA set's videos, as jobs and as a test_q.json + test_a.json dir."""
    questions = json.loads((qa_dir / "test_q.json").read_text())
    videos = [(q["video_name"], find_video_file(qa_dir / "videos", q["video_name"])) for q in questions]
    videos = [(name, path) for name, path in videos if path is not None]
    rows = [{"video_name": videos[i % len(videos)][0], "question_id": f"b{i}",
             "question": f"What happens in this video? (take {i})"} for i in range(count)]
    out = Path(tempfile.mkdtemp(prefix="vllm-bench-qa-"))
    (out / "test_q.json").write_text(json.dumps(rows))
    (out / "test_a.json").write_text(json.dumps([{"question_id": r["question_id"], "answer": "-", "type": "t"}
                                                 for r in rows]))
    return [(videos[i % len(videos)][1], r["question"]) for i, r in enumerate(rows)], out


def eval_rate(argv: list[str], out: Path, questions: int) -> float:
    began = time.perf_counter()
    if cli_main(["eval", "run", *argv, "--output-dir", str(out)]) != 0:
        raise SystemExit(f"eval run failed: {argv}")
    return questions / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vllm-python", required=True, type=Path, help="the Python of vLLM's environment")
    parser.add_argument("--model", required=True, type=Path, help="a Video-Panda model directory")
    parser.add_argument("--qa-dir", required=True, type=Path, help="test_q.json + videos/ (e.g. the quickstart's)")
    parser.add_argument("--requests", type=int, default=16, help="requests per row")
    parser.add_argument("--questions", type=int, default=24, help="eval questions")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()

    print(f"load average before: {os.getloadavg()}, {os.cpu_count()} CPUs", flush=True)
    jobs, qa = qa_jobs(args.qa_dir, max(args.requests, args.questions))
    work = Path(tempfile.mkdtemp(prefix="vllm-bench-"))
    media = args.qa_dir.resolve()
    ours_port, vllm_port = free_port(), free_port()
    servers = {
        "videopanda serve": ([sys.executable, "-m", "videopanda", "serve", str(args.model), "--port", str(ours_port),
                              "--dtype", args.dtype, "--media-root", str(media), "--max-batch-size", "16"],
                             f"http://127.0.0.1:{ours_port}/v1"),
        "vLLM": ([str(args.vllm_python), "-m", "videopanda.vllm.serve", str(args.model), "--port", str(vllm_port),
                  "--dtype", args.dtype, "--allowed-local-media-path", str(media), "--served-model-name", "model",
                  "--max-model-len", "4096", "--max-num-seqs", "16", "--kv-cache-memory-bytes", str(2 * 2**30)],
                 f"http://127.0.0.1:{vllm_port}/v1"),
    }
    rates: dict[str, dict[int, float]] = {}
    common = ["--questions", str(qa / "test_q.json"), "--answers", str(qa / "test_a.json"), "--video-dir",
              str(args.qa_dir / "videos"), "--max-new-tokens", str(args.max_tokens)]
    eval_rates = {}
    for name, (command, url) in servers.items():
        server, started = start(command, url, work / f"{name.split()[0]}.log")
        try:
            model_id = openai.OpenAI(base_url=url, api_key="EMPTY").models.list().data[0].id
            requests_per_s(url, model_id, 1, jobs[:1], args.max_tokens)  # warm-up
            rates[name] = {n: requests_per_s(url, model_id, n, jobs[: args.requests], args.max_tokens)
                           for n in CLIENTS}
            print(f"{name}: started in {started:.0f} s; " + ", ".join(f"{n} clients {r:.2f} req/s"
                                                                       for n, r in rates[name].items()), flush=True)
            if name == "vLLM":
                eval_rates["eval run --endpoint vLLM (16 workers)"] = eval_rate(
                    ["--endpoint", url, "--endpoint-model", model_id, "--workers", "16", *common],
                    work / "eval-vllm", args.questions)
        finally:
            stop(server)
    eval_rates["eval run local (batch 8)"] = eval_rate(
        [str(args.model), "--batch-size", "8", "--dtype", args.dtype, *common], work / "eval-local", args.questions)
    local = {r["id"]: r["pred"] for r in read_jsonl(work / "eval-local" / "merge.jsonl")}
    served = {r["id"]: r["pred"] for r in read_jsonl(work / "eval-vllm" / "merge.jsonl")}
    same = sum(local[k] == served.get(k) for k in local)

    print(f"\nmodel {args.model}, {args.dtype}, {args.requests} requests per row of max_tokens={args.max_tokens}")
    print("| server | " + " | ".join(f"{n} clients req/s" for n in CLIENTS) + " |")
    print("|---|" + "---|" * len(CLIENTS))
    for name, row in rates.items():
        print(f"| {name} | " + " | ".join(f"{row[n]:.2f}" for n in CLIENTS) + " |")
    print(f"\n| eval run ({args.questions} questions) | questions/s |\n|---|---|")
    for name, rate in eval_rates.items():
        print(f"| {name} | {rate:.2f} |")
    print(f"\nsame answers, vLLM vs local eval run: {same}/{len(local)}")
    print(f"load average after: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
