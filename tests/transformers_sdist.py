"""transformers' own test mixins, from its source distribution on PyPI for the installed version.

Nothing of transformers' tests is copied into this repository: the sdist is downloaded once (pip) into
``build/transformers_sdist/`` (ignored by git) and its top-level ``tests/*.py`` extracted beside it.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import transformers

SDIST_DIR = Path(__file__).resolve().parents[1] / "build" / "transformers_sdist"


def transformers_tests_root() -> Path:
    """The directory holding transformers' ``tests/test_*_common.py`` for the installed version (downloaded
    and extracted on first use); put it on ``sys.path`` to import the mixins as top-level modules."""
    version = transformers.__version__
    root = SDIST_DIR / f"transformers-{version}" / "tests"
    if (root / "test_processing_common.py").is_file():
        return root
    archive = SDIST_DIR / f"transformers-{version}.tar.gz"
    if not archive.is_file():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        f"transformers=={version}", "-d", str(SDIST_DIR)], check=True, capture_output=True)
    prefix = f"transformers-{version}/tests/"
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers()
                   if m.isfile() and m.name.startswith(prefix) and "/" not in m.name[len(prefix):]]
        tar.extractall(SDIST_DIR, members=members, filter="data")
    return root
