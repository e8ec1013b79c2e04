"""SmolLM2 as a safetensors directory, converted from its GGUF file once per machine.

Parsing and de-quantising the GGUF takes 10-40 s on a 2-core CPU, every time; the converted directory
(``model.safetensors`` + config + tokenizer files) loads with ``from_pretrained`` in under a second.

Layout: ``<cache dir>/smollm2-<sha256 of the GGUF>/``, with ``CACHE_MARKER`` written last (the GGUF's checksum
and every file's size). The cache dir is ``~/.cache/videopanda`` unless the caller passes one or
``set_default_cache_dir`` chose another (the CLI does that from ``$VIDEOPANDA_CACHE_DIR``).

Concurrency: a converter writes into a temporary directory beside the final one and renames it into place
under a file lock; a process that finds a valid cache there (another converter won) discards its own copy.
A cache that fails the check (marker missing, a file missing or of another size, an unreadable safetensors
header) is rebuilt, never trusted.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import safe_open

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

CACHE_MARKER = "videopanda-cache.json"
WEIGHTS_FILE = "model.safetensors"
_HASH_CHUNK = 1 << 20

_default_cache_dir: Path | None = None


def default_cache_dir() -> Path:
    """Where converted models go: ``set_default_cache_dir``'s choice, else ``~/.cache/videopanda``."""
    return _default_cache_dir or Path.home() / ".cache" / "videopanda"


def set_default_cache_dir(path: str | Path | None) -> None:
    """Make ``path`` this process's default cache dir (None: back to ``~/.cache/videopanda``)."""
    global _default_cache_dir
    _default_cache_dir = Path(path).expanduser() if path is not None else None


def gguf_sha256(gguf: Path) -> str:
    """The file's SHA-256 (about 0.4 s for SmolLM2's 98 MB), computed once per process per file version."""
    stat = gguf.stat()
    return _sha256(gguf.resolve(), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def cached_model_dir(
    gguf: Path, cache_dir: str | Path | None = None, convert: Callable[[Path, Path], None] | None = None
) -> Path:
    """The converted directory for ``gguf``, converting it first if there is no valid one.

    ``convert(gguf, out_dir)`` writes the model and tokenizer files into ``out_dir`` (default: ``convert_gguf``).
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    sha = gguf_sha256(gguf)
    final = root / f"{gguf.stem.split('.')[0].lower()}-{sha[:16]}"
    if is_complete(final, sha):
        return final
    root.mkdir(parents=True, exist_ok=True)
    logger.info("converting %s into %s (once per machine)", gguf.name, final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=root))
    try:
        (convert or convert_gguf)(gguf, tmp)
        write_marker(tmp, sha)
        _install(tmp, final, sha)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when it was renamed into place
    return final


def convert_gguf(gguf: Path, out: Path) -> None:
    """De-quantise ``gguf`` (float32 weights) and save model, config and tokenizer into ``out``."""
    save_converted(*parse_gguf(gguf), out)


def parse_gguf(gguf: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) parsed from ``gguf`` by transformers, the model de-quantised to float32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = drop_quantization(AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name))
    return model, AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def drop_quantization(model: PreTrainedModel) -> PreTrainedModel:
    """``model`` without the GGUF quantization entry its config keeps after de-quantising on load.

    Such an entry (in a loaded model, or in a directory saved from one) would break saving and reloading.
    """
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.hf_quantizer = None  # type: ignore[assignment]  # set at load time; PreTrainedModel does not declare it
    return model


def save_converted(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out: Path) -> None:
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def write_marker(directory: Path, sha: str) -> None:
    """Record the source checksum and every file's size; written last, so its presence means complete."""
    files = {p.name: p.stat().st_size for p in sorted(directory.iterdir()) if p.is_file()}
    if WEIGHTS_FILE not in files:
        raise FileNotFoundError(f"conversion wrote no {WEIGHTS_FILE} into {directory}")
    (directory / CACHE_MARKER).write_text(json.dumps({"gguf_sha256": sha, "files": files}, indent=1))


def is_complete(directory: Path, sha: str) -> bool:
    """Whether ``directory`` holds a whole conversion of the GGUF with checksum ``sha``."""
    try:
        marker = json.loads((directory / CACHE_MARKER).read_text())
        if marker["gguf_sha256"] != sha:
            return False
        for name, size in marker["files"].items():
            if (directory / name).stat().st_size != size:
                return False
        with safe_open(directory / WEIGHTS_FILE, framework="pt") as weights:
            return len(list(weights.keys())) > 0
    except Exception as err:  # a missing file, bad JSON, or safetensors' own error for a header that does not parse
        logger.debug("cache %s not usable: %s", directory, err)
        return False


def _install(tmp: Path, final: Path, sha: str) -> None:
    """Rename ``tmp`` to ``final`` unless a valid ``final`` exists (then ``tmp`` is dropped by the caller)."""
    with (final.parent / f".{final.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_complete(final, sha):
            logger.info("another process converted %s first; using its copy", final.name)
            return
        if final.exists():
            logger.warning("cache %s is incomplete or damaged: rebuilding it", final)
            broken = final.with_name(f".{final.name}.broken-{os.getpid()}")
            final.rename(broken)
            shutil.rmtree(broken, ignore_errors=True)
        tmp.rename(final)
