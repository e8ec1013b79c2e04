"""transformers' own common tests, from the source distribution of the installed version (nothing of it is
committed here): ``transformers_tests_root()`` downloads it with pip into ``build/transformers_sdist/``
(gitignored, kept between runs) and returns its extracted ``tests/`` folder.

The sdist does not ship ``tests/generation/`` or ``tests/exporters/``, which ``test_modeling_common.py``
imports its ``GenerationTesterMixin`` and ``ExportTesterMixin`` from: they are stood in by empty classes.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tarfile
from pathlib import Path

CACHE = Path(__file__).resolve().parents[1] / "build" / "transformers_sdist"
STAND_INS = {  # file under tests/ -> its text
    "__init__.py": "",
    "generation/__init__.py": "",
    "generation/test_utils.py": '"""Stand-in (videopanda): the sdist has no tests/generation/."""\n\n\n'
                                "class GenerationTesterMixin:\n    pass\n",
    "exporters/__init__.py": "",
    "exporters/test_export.py": '"""Stand-in (videopanda): the sdist has no tests/exporters/."""\n\n\n'
                                "class ExportTesterMixin:\n    pass\n",
}


def transformers_tests_root() -> Path:
    """The ``tests/`` folder of the installed transformers' sdist, with the stand-ins in place."""
    version = importlib.metadata.version("transformers")
    tests = CACHE / f"transformers-{version}" / "tests"
    if not (tests / "test_modeling_common.py").is_file():
        _extract_tests(_download(version), version)
    for name, text in STAND_INS.items():
        path = tests / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
    return tests


def _download(version: str) -> Path:
    archive = CACHE / f"transformers-{version}.tar.gz"
    if not archive.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        f"transformers=={version}", "-d", str(CACHE)], check=True, capture_output=True)
    return archive


def _extract_tests(archive: Path, version: str) -> None:
    prefix = f"transformers-{version}/tests/"
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
        tar.extractall(CACHE, members, filter="data")
