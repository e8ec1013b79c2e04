"""Requests/s and latency of `videopanda serve` for 1, 4 and 8 concurrent clients, against one at a time.

One server process-worth of app (uvicorn on 127.0.0.1, in this process), driven
over HTTP by the official openai SDK from client threads. Every row sends the
same requests (distinct prompts, fixed max_tokens); the baselines, measured in
the same run: one client sending them one after another, and 8 clients against
a server with batching off (``--max-batch-size 1``).

    python benchmarks/serve_concurrency.py                         # SmolLM2, text chat (the local judge)
    python benchmarks/serve_concurrency.py --model DIR --video clip.mp4   # a Video-Panda model, one video
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import openai
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from client_threads import run_client_threads  # noqa: E402

from serve_support import start_uvicorn  # noqa: E402
from videopanda.serve import MediaPolicy, ServeConfig, create_app, load_served_model  # noqa: E402

PROMPTS = [f"Give one short fact about the number {i}." for i in range(64)]


def run_clients(url: str, model_id: str, clients: int, requests: int, max_tokens: int,
                video: Path | None) -> tuple[float, list[float]]:
    """``requests`` calls shared by ``clients`` threads; returns the wall time and each call's latency."""
    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=600)

    def call(i: int) -> None:
        content: list = [PROMPTS[i % len(PROMPTS)]]
        if video is not None:
            content.append({"type": "video_url", "video_url": {"url": video.name}})
        client.chat.completions.create(model=model_id, max_tokens=max_tokens,
                                       messages=[{"role": "user", "content": content}])

    return run_client_threads(clients, range(requests), call)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="what `videopanda serve` takes (default smollm2)")
    parser.add_argument("--video", type=Path, help="one video every request asks about (Video-Panda models)")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()

    model = load_served_model(args.model, args.device, args.dtype)
    media = MediaPolicy(args.video.resolve().parent if args.video else None)
    print(f"model {model.model_id}, device {args.device}, {torch.get_num_threads()} threads, "
          f"{args.requests} requests of max_tokens={args.max_tokens} per row")
    rows = [("one at a time (1 client)", 1, 8), ("4 clients", 4, 8), ("8 clients", 8, 8),
            ("8 clients, batching off", 8, 1)]
    baseline = None
    print("| clients | max batch | requests/s | mean latency s | max latency s | speed-up |")
    print("|---|---|---|---|---|---|", flush=True)
    for name, clients, max_batch in rows:
        app = create_app(model, ServeConfig(media=media, max_batch_size=max_batch, max_wait_ms=10))
        server, thread, url = start_uvicorn(app)
        try:
            run_clients(url, model.model_id, 1, 1, args.max_tokens, args.video)  # warm-up
            wall, latencies = run_clients(url, model.model_id, clients, args.requests, args.max_tokens, args.video)
        finally:
            server.should_exit = True
            thread.join(timeout=30)
        rate = args.requests / wall
        baseline = baseline or rate
        print(f"| {name} | {max_batch} | {rate:.2f} | {statistics.mean(latencies):.2f} | {max(latencies):.2f} | "
              f"{rate / baseline:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
