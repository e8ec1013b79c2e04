"""transformers' own ``ModelTesterMixin`` (from its sdist: ``transformers_sdist.py``) accepts VideoPanda: no more
failures than a tiny LLaVA gets through the same run, and every failure or skip left is listed with its
reason in ``transformers_model_test_exceptions.py``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import pytest

from transformers_model_test_exceptions import EXCEPTIONS
from transformers_sdist import transformers_tests_root

CASES = Path(__file__).with_name("transformers_model_cases.py")
CLASSES = {"VideoPandaModelTest": "videopanda", "LlavaModelTest": "llava"}


def run_model_tests(junit: Path) -> dict[str, dict[str, set[str]]]:
    """model -> outcome (passed, failed, skipped) -> test names, from one pytest run of the cases in the sdist."""
    tests = transformers_tests_root()
    shutil.copyfile(CASES, tests / "test_videopanda_model_cases.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                         os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "pytest", "tests/test_videopanda_model_cases.py", "-q", "-p", "no:cacheprovider",
               "-p", "no:warnings", "-o", "addopts=", f"--junitxml={junit}"]
    subprocess.run(command, cwd=tests.parent, env=env, capture_output=True, timeout=3000)
    return parse_junit(junit)


def parse_junit(junit: Path) -> dict[str, dict[str, set[str]]]:
    outcomes: dict[str, dict[str, set[str]]] = {model: defaultdict(set) for model in CLASSES.values()}
    for case in ET.parse(junit).getroot().iter("testcase"):
        model = CLASSES[case.get("classname", "").rsplit(".", 1)[-1]]
        kinds = {child.tag for child in case}
        outcome = "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
        outcomes[model][outcome].add(case.get("name", ""))
    return outcomes


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, dict[str, set[str]]]:
    found = run_model_tests(tmp_path_factory.mktemp("transformers_model_tests") / "junit.xml")
    print({model: {k: len(v) for k, v in o.items()} for model, o in found.items()})
    assert found["videopanda"]["passed"] and found["llava"]["passed"], found  # the run happened
    return found


@pytest.mark.slow
def test_every_videopanda_failure_and_skip_is_listed_with_its_reason(outcomes):
    videopanda = outcomes["videopanda"]
    unlisted = sorted((videopanda["failed"] | videopanda["skipped"]) - set(EXCEPTIONS))
    assert not unlisted, f"failed or skipped without a reason in transformers_model_test_exceptions.py: {unlisted}"
    stale = sorted(set(EXCEPTIONS) - videopanda["failed"] - videopanda["skipped"])
    assert not stale, f"listed in transformers_model_test_exceptions.py but passing now: {stale}"


@pytest.mark.slow
def test_videopanda_fails_no_more_than_llava(outcomes):
    failed = {model: sorted(o["failed"]) for model, o in outcomes.items()}
    assert len(failed["videopanda"]) <= len(failed["llava"]), failed
