"""`videopanda eval run | merge | judge | report | five-criteria | lmms-tasks | lmms`: zero-shot video QA evaluation."""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from videopanda.cli import positive_int
from videopanda.runtime import DTYPE_CHOICES

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``eval`` and its subcommands to the top-level parser."""
    parser = subparsers.add_parser("eval", help="zero-shot video QA: answer, judge, report")
    sub = parser.add_subparsers(dest="eval_command", metavar="STEP", required=True)
    _add_run(sub)
    _add_merge(sub)
    _add_judge(sub)
    _add_report(sub)
    _add_five_criteria(sub)
    _add_lmms_tasks(sub)
    _add_lmms_run(sub)


# ----------------------------------------------------------------------------- run / merge


def _add_qa_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("--benchmark", help="MSVD | MSRVTT | TGIF | ActivityNet | Synth (under --data-root)")
    p.add_argument("--data-root", type=Path, help="DATA_ROOT holding eval/GPT_Zero_Shot_QA/")
    p.add_argument("--questions", type=Path, help="test_q.json (instead of --benchmark)")
    p.add_argument("--answers", type=Path, help="test_a.json (instead of --benchmark)")
    p.add_argument("--video-dir", type=Path, help="video directory (instead of --benchmark)")
    p.add_argument("--max-samples", type=positive_int, metavar="N", help="only the first N questions (a quick check)")


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="answer a QA benchmark with a model or a served one (sharded, resumable)")
    p.add_argument("model_dir", type=Path, nargs="?", help="a trained Video-Panda model directory (or --endpoint)")
    _add_qa_source(p)
    p.add_argument("--output-dir", type=Path, help="default: <benchmark dir>/<model dir or endpoint model name>")
    p.add_argument("--num-shards", type=positive_int, default=1)
    p.add_argument("--shard-id", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=1024)
    p.add_argument("--template", help="conversation template of the prompts (default: the one the model records)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... or auto")
    p.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES,
                   help="precision (default auto: bfloat16 on CUDA, on CPUs only where it is faster than float32)")
    p.add_argument("--num-frames", type=int, metavar="N",
                   help="frames sampled per video (a multiple of 4; default: the model's, 8 for the release)")
    _add_endpoint(p)
    p.set_defaults(func=run_command)


def _add_endpoint(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("a served model instead of MODEL_DIR (any OpenAI-compatible server: vLLM, SGLang, "
                             "videopanda serve)")
    g.add_argument("--endpoint", metavar="URL", help="its base URL, e.g. http://HOST:8000/v1")
    g.add_argument("--endpoint-model", metavar="NAME", help="the served model's id (see URL/models)")
    g.add_argument("--endpoint-video-as", default="video_url", metavar="{video_url,file_url,frames}",
                   help="video_url: the file inline as a data: URL (default); file_url: a file:// URL the server "
                   "reads from its own disk; frames: the release's sampled frames as image_url parts")
    g.add_argument("--endpoint-frames", type=int, default=8, help="frames sent with --endpoint-video-as frames")
    g.add_argument("--api-key", help="default: $OPENAI_API_KEY ('EMPTY' for local servers)")
    g.add_argument("--workers", type=positive_int, default=8, help="concurrent requests")
    g.add_argument("--timeout", type=float, default=600.0, help="seconds per request")
    g.add_argument("--max-attempts", type=positive_int, default=6, help="HTTP attempts per request (429/5xx/timeouts)")


def _add_merge(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help="merge shard files into merge.jsonl and missing.jsonl")
    _add_qa_source(p)
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--num-shards", type=positive_int, required=True)
    p.set_defaults(func=merge_command)


def _qa_paths(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    from videopanda.eval.benchmarks import get_benchmark

    if args.benchmark:
        if args.data_root is None:
            raise SystemExit("--benchmark needs --data-root")
        return get_benchmark(args.benchmark).paths(args.data_root)
    if not (args.questions and args.answers and args.video_dir):
        raise SystemExit("give --benchmark NAME --data-root DIR, or --questions, --answers and --video-dir")
    return args.questions, args.answers, args.video_dir


def _questions(args: argparse.Namespace):
    from videopanda.eval.run import load_qa_pairs

    questions_path, answers_path, video_dir = _qa_paths(args)
    questions = load_qa_pairs(questions_path, answers_path)
    if not questions:
        raise ValueError(f"{questions_path} holds no questions")
    return questions[: args.max_samples] if args.max_samples else questions, video_dir


def _run_output_dir(args: argparse.Namespace, video_dir: Path) -> Path:
    """``--output-dir``, else beside the videos, named after MODEL_DIR or the served model."""
    if (args.model_dir is None) == (args.endpoint is None):
        raise SystemExit("give a MODEL_DIR or --endpoint URL --endpoint-model NAME (one of them)")
    if args.endpoint is not None and not args.endpoint_model:
        raise SystemExit("--endpoint needs --endpoint-model NAME (the served model's id)")
    if args.output_dir is not None:
        return args.output_dir
    if args.endpoint is None:
        return Path(video_dir).parent / Path(os.path.abspath(args.model_dir)).name
    from videopanda.paths import id_file_stem

    return Path(video_dir).parent / id_file_stem(args.endpoint_model.replace("/", "--"))


def _run_predictor(args: argparse.Namespace):
    """(predictor, its run settings) for MODEL_DIR or --endpoint."""
    if args.endpoint is not None:
        from videopanda.eval.endpoint import EndpointConfig, EndpointPredictor

        endpoint_config = EndpointConfig(
            args.endpoint, args.endpoint_model, args.api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
            args.endpoint_video_as, args.endpoint_frames, args.max_new_tokens, args.workers, args.timeout,
            args.max_attempts,
        )
        endpoint = EndpointPredictor(endpoint_config)
        return endpoint, {**endpoint.settings(), "benchmark": _benchmark_name(args)}
    from videopanda.eval.run import model_run_settings
    from videopanda.inference import GenerationConfig, VideoPandaPredictor

    config = GenerationConfig(args.max_new_tokens, args.template, args.batch_size, num_frames=args.num_frames)
    predictor = VideoPandaPredictor.from_pretrained(args.model_dir, config, args.device, args.dtype)
    return predictor, model_run_settings(args.model_dir, predictor, _benchmark_name(args))


def run_command(args: argparse.Namespace) -> int:
    from videopanda.eval.run import shard_lock_name
    from videopanda.files import OutputLock

    questions, video_dir = _questions(args)
    output_dir = _run_output_dir(args, video_dir)
    # Shards of one run share the directory, each its own files: one writer per shard, taken before the model loads.
    with OutputLock(output_dir, "eval run", shard_lock_name(args.num_shards, args.shard_id)):
        return _answer(args, questions, video_dir, output_dir)


def _answer(args: argparse.Namespace, questions, video_dir: Path, output_dir: Path) -> int:
    from videopanda.eval.run import merge_shards, record_run_settings, run_shard

    predictor, settings = _run_predictor(args)
    record_run_settings(output_dir, settings)
    summary = run_shard(questions, video_dir, predictor, output_dir, args.num_shards, args.shard_id)
    logger.info("shard %d/%d: %s", args.shard_id, args.num_shards, summary)
    if args.num_shards == 1:
        logger.info("merged: %s", merge_shards(output_dir, questions, 1))
    else:
        logger.info("when all shards are done: videopanda eval merge --output-dir %s --num-shards %d ...",
                    output_dir, args.num_shards)
    if summary.answered < summary.total:
        logger.error("%d of %d questions unanswered (missing or unreadable videos, listed in %s)",
                     summary.total - summary.answered, summary.total, output_dir)
        return 1
    return 0


def _benchmark_name(args: argparse.Namespace) -> str:
    """The benchmark's name (``--benchmark``), else the directory of the ``--questions`` file."""
    from videopanda.eval.benchmarks import get_benchmark

    return get_benchmark(args.benchmark).name if args.benchmark else args.questions.resolve().parent.name


def merge_command(args: argparse.Namespace) -> int:
    from videopanda.eval.run import merge_shards

    questions, _ = _questions(args)
    counts = merge_shards(args.output_dir, questions, args.num_shards)
    print(json.dumps(counts))
    return 0 if counts["unanswered"] == 0 else 1


# ----------------------------------------------------------------------------- judge


def _add_judge_backend(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=("openai", "local", "rule"), default="openai")
    p.add_argument("--judge-model", help="openai: the endpoint's model id (default gpt-3.5-turbo); "
                   "local: a chat model directory or 'smollm2' (default)")
    p.add_argument("--base-url", help="OpenAI-compatible endpoint (default: $OPENAI_BASE_URL, else api.openai.com)")
    p.add_argument("--api-key", help="default: $OPENAI_API_KEY ('EMPTY' for local servers)")
    p.add_argument("--workers", type=positive_int, default=8, help="concurrent judge requests")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per judge request")
    p.add_argument("--max-attempts", type=positive_int, default=6, help="HTTP attempts per request (429/5xx/timeouts)")
    p.add_argument("--seed", type=int, default=0, help="sent to endpoints that support it")
    p.add_argument("--cache", type=Path, help="judge cache (default: OUTPUT_DIR/judge_cache.jsonl)")


def _add_judge(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("judge", help="score predictions with an LLM judge or the rule-based match")
    p.add_argument("predictions", type=Path, help="merge.jsonl: lines {id, question, answer, pred}")
    p.add_argument("--output-dir", type=Path, help="default: <predictions dir>/judge_<backend>")
    p.add_argument("--prompt", default="qa", help="judge prompt: qa, or a five-criteria name")
    p.add_argument("--benchmark-name", help="recorded in metrics.jsonl (default: the benchmark run_settings.json "
                   "beside the predictions records)")
    p.add_argument("--model-name", help="recorded in metrics.jsonl (default: the model directory run_settings.json "
                   "beside the predictions records)")
    p.add_argument("--num-questions", type=int, metavar="N", help="questions in the whole benchmark, for the "
                   "coverage (default: the predictions + the unanswered ones listed in missing.jsonl beside them)")
    p.add_argument("--resume-from", type=Path, help="the release's judge output (its --output_dir of <id>.json "
                   "files, or its combined results.json): items judged there are not asked again")
    p.add_argument("--release-json", type=Path, help="also write the release's combined {id: [verdict, qa]} "
                   "file (its --output_json, e.g. <predictions dir>/results.json)")
    _add_judge_backend(p)
    p.set_defaults(func=judge_command)


def build_judge(args: argparse.Namespace):
    """The judge the flags ask for; the OpenAI key and URL are read here, at the client boundary."""
    if args.backend == "rule":
        from videopanda.eval.judge.rule_backend import RuleJudge

        return RuleJudge()
    from videopanda.eval.judge.base import LLMJudge

    if args.backend == "local":
        from videopanda.eval.judge.local_backend import LocalBackend
        from videopanda.inference import ChatLLM

        return LLMJudge(LocalBackend(ChatLLM.load(args.judge_model or "smollm2")))
    from videopanda.eval.judge.openai_backend import OpenAIBackend, OpenAIJudgeConfig

    config = OpenAIJudgeConfig(
        model=args.judge_model or "gpt-3.5-turbo", base_url=args.base_url or os.environ.get("OPENAI_BASE_URL"),
        api_key=args.api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY", timeout_s=args.timeout,
        max_attempts=args.max_attempts, seed=args.seed,
    )
    return LLMJudge(OpenAIBackend(config))


def judge_command(args: argparse.Namespace) -> int:
    from videopanda.eval.judge.prompts import get_prompt
    from videopanda.eval.judge.runner import FAILURES_FILE, load_predictions, run_judge
    from videopanda.files import OutputLock

    prompt = get_prompt(args.prompt)
    items = load_predictions(args.predictions)
    unanswered = _unanswered(args, items)
    output_dir = args.output_dir or args.predictions.parent / f"judge_{args.backend}"
    meta = {**_run_names(args), "predictions": str(args.predictions)}
    workers = 1 if args.backend == "local" else args.workers
    with OutputLock(output_dir, "eval judge"):
        results = run_judge(items, output_dir, build_judge(args), prompt, args.cache, workers, meta, unanswered,
                            args.resume_from, args.release_json)
    shown = ("accuracy", "accuracy_all", "mean_score", "judged", "failures", "answered", "questions",
             "accuracy_benchmark", "accuracy_all_benchmark")
    print(json.dumps({k: results[k] for k in shown}))
    if results["failures"]:
        logger.error("%d of %d items could not be judged (%s): rerun to retry them", results["failures"],
                     results["total"], Path(output_dir) / FAILURES_FILE)
        return 1
    return 0


def _run_names(args: argparse.Namespace) -> dict[str, str]:
    """Benchmark and model names: the flags, else what ``eval run`` recorded in run_settings.json."""
    from videopanda.eval.run import SETTINGS_FILE

    settings_path = args.predictions.with_name(SETTINGS_FILE)
    settings = json.loads(settings_path.read_text()) if settings_path.is_file() else {}
    names: dict[str, str | None] = {"benchmark": args.benchmark_name or settings.get("benchmark"),
             "model": args.model_name or (Path(settings["model"]).name if settings.get("model") else None)}
    absent = [key for key, value in names.items() if not value]
    if absent:
        flags = " and ".join(f"--{key}-name" for key in absent)
        raise ValueError(f"give {flags}: {settings_path} does not record the {' and '.join(absent)}")
    return {key: value for key, value in names.items() if value}


def _unanswered(args: argparse.Namespace, items) -> int:
    """Benchmark questions without a prediction: ``--num-questions`` minus the predictions, else missing.jsonl."""
    from videopanda.eval.judge.runner import unanswered_count

    if args.num_questions is not None:
        if args.num_questions < len(items):
            raise ValueError(f"--num-questions {args.num_questions} is less than the {len(items)} predictions")
        return args.num_questions - len(items)
    listed = unanswered_count(args.predictions, items)
    if listed is None:
        logger.warning("no missing.jsonl beside %s: coverage assumes its %d predictions are the whole benchmark "
                       "(give --num-questions N)", args.predictions, len(items))
    return listed or 0


# ----------------------------------------------------------------------------- report


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="Markdown/CSV table and bar chart over judged runs")
    p.add_argument("results", type=Path, nargs="+", help="`eval judge` output directories, or the release's judge "
                   "output (its --output_dir or its combined results.json)")
    p.add_argument("--out", type=Path, default=Path("report"), help="output directory")
    p.add_argument("--overwrite", action="store_true", help="replace a report already in --out")
    p.set_defaults(func=report_command)


def report_command(args: argparse.Namespace) -> int:
    from videopanda.eval.report import write_report

    paths = write_report(args.results, args.out, args.overwrite)
    print(paths["md"].read_text())
    logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return 0


# ----------------------------------------------------------------------------- five criteria


def _add_five_criteria(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("five-criteria", help="Video-ChatGPT benchmark: answer (with MODEL_DIR) and judge 5 criteria")
    p.add_argument("--data-dir", type=Path, required=True, help="holds generic_qa.json, temporal_qa.json, "
                   "consistency_qa.json and videos/")
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--model-dir", type=Path, help="answer the questions first with this model")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=1024)
    p.add_argument("--device", default="cpu")
    _add_judge_backend(p)
    p.set_defaults(func=five_criteria_command)


def five_criteria_command(args: argparse.Namespace) -> int:
    from videopanda.eval import five_criteria as fc
    from videopanda.files import OutputLock

    if not args.data_dir.is_dir():
        raise FileNotFoundError(f"--data-dir {args.data_dir} not found: give the directory holding "
                                f"{', '.join(fc.qa_file('', s).name for s in fc.QA_SETS)} and videos/")
    with OutputLock(args.output_dir, "eval five-criteria"):
        return _five_criteria(args)


def _five_criteria(args: argparse.Namespace) -> int:
    from videopanda.eval import five_criteria as fc
    from videopanda.eval.jsonl import read_jsonl
    from videopanda.eval.judge.prompts import get_prompt
    from videopanda.eval.judge.runner import run_judge
    from videopanda.eval.run import MERGE_FILE, merge_shards, run_shard

    if args.model_dir is not None:
        from videopanda.inference import GenerationConfig, VideoPandaPredictor

        config = GenerationConfig(args.max_new_tokens, batch_size=args.batch_size)
        predictor = VideoPandaPredictor.from_pretrained(args.model_dir, config, args.device)
        for qa_set in fc.QA_SETS:
            questions = fc.load_questions(fc.qa_file(args.data_dir, qa_set))
            run_shard(questions, args.data_dir / "videos", predictor, args.output_dir / qa_set)
            merge_shards(args.output_dir / qa_set, questions, 1)
    judge = build_judge(args)
    summary = {}
    incomplete = []
    for criterion in fc.CRITERIA:
        merged = args.output_dir / criterion.qa_set / MERGE_FILE
        if not merged.is_file():
            raise FileNotFoundError(f"{merged} not found: answer the questions first (--model-dir DIR)")
        items = fc.judge_items(read_jsonl(merged), criterion.qa_set)
        if not items:
            raise ValueError(f"{merged} holds no answers: nothing to judge for {criterion.name}")
        meta = {"benchmark": f"VideoChatGPT-{criterion.name}", "model": (args.model_dir or args.output_dir).name}
        results = run_judge(items, args.output_dir / f"judge_{criterion.name}", judge, get_prompt(criterion.name),
                            args.cache, 1 if args.backend == "local" else args.workers, meta)
        summary[criterion.name] = results["mean_score"]
        if results["failures"] or results["mean_score"] is None:
            incomplete.append(f"{criterion.name} ({results['failures']} of {results['total']} not judged)")
    print(json.dumps(summary))
    if incomplete:
        logger.error("criteria not fully judged: %s; rerun to retry them", ", ".join(incomplete))
        return 1
    return 0


# ----------------------------------------------------------------------------- lmms-eval tasks


def _add_lmms_tasks(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lmms-tasks", help="write our QA tasks for lmms-eval and print the directory for "
                       "--include_path")
    p.add_argument("--data-root", type=Path, required=True, help="DATA_ROOT holding eval/GPT_Zero_Shot_QA/")
    p.add_argument("--out", type=Path, help="default: DATA_ROOT/eval/lmms_tasks")
    p.add_argument("--benchmark", action="append", help="only these (repeatable; default: every one found)")
    p.add_argument("--backend", choices=("openai", "rule"), default="openai", help="the tasks' LLM judge, or "
                   "the rule-based match only")
    p.add_argument("--judge-model", default="gpt-3.5-turbo", help="the endpoint's model id")
    p.add_argument("--base-url", help="OpenAI-compatible endpoint (default api.openai.com); the key is read from "
                   "$OPENAI_API_KEY when lmms-eval runs")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=lmms_tasks_command)


def lmms_tasks_command(args: argparse.Namespace) -> int:
    from videopanda.lmms.tasks_dir import TaskJudge, write_tasks_dir

    out = args.out or args.data_root / "eval" / "lmms_tasks"
    judge = TaskJudge(args.backend, args.judge_model, args.base_url, args.seed)
    tasks = write_tasks_dir(args.data_root, out, judge, args.benchmark)
    logger.info("tasks %s: lmms-eval --include_path %s --tasks %s", ", ".join(tasks), out, ",".join(tasks))
    print(out)
    return 0


def _add_lmms_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lmms", help="run lmms-eval's CLI (`videopanda eval lmms -- ARGS`) and exit non-zero when "
                       "its run failed", description="Runs `python -m lmms_eval ARGS` and checks what it wrote: "
                       "lmms-eval itself exits 0 after a failed evaluation. The run failed unless a results file "
                       "newer than the start is under --output_path with every task of --tasks scored.")
    p.add_argument("lmms_args", nargs=argparse.REMAINDER, metavar="-- ARGS",
                   help="lmms-eval's own arguments, after `--`; --tasks and --output_path are required")
    p.set_defaults(func=lmms_run_command)


def lmms_run_command(args: argparse.Namespace) -> int:
    from videopanda.lmms.run_check import LmmsRunError, run_lmms_eval

    lmms_args = args.lmms_args[1:] if args.lmms_args[:1] == ["--"] else args.lmms_args
    try:
        results = run_lmms_eval(lmms_args)
    except LmmsRunError as err:
        logger.error("%s", err)
        return 1
    logger.info("lmms-eval scored %s", ", ".join(sorted(results.get("results", {}))))
    return 0
