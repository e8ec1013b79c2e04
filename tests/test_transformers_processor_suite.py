"""transformers' own processor and video-processor tests against VideoPandaProcessor and its video processor.

The mixins (``ProcessorTesterMixin``, ``VideoProcessingTestMixin``) come from transformers' sdist for the
installed version (``transformers_sdist``). They run in a subprocess pytest over generated test classes;
every failure or skip must be listed, with its reason, in ``transformers_processor_test_exceptions.py``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from transformers_processor_test_exceptions import EXCEPTIONS
from transformers_sdist import transformers_tests_root

pytestmark = pytest.mark.slow

# Stand-in for transformers' repository utils/ (not in the sdist): hub fixtures are used by URL as given.
FETCH_STANDIN = "def url_to_local_path(url, *args, **kwargs):\n    return url\n"

GENERATED = '''
import sys
import unittest

sys.path[:0] = [{tests_root!r}, {standins!r}]

from test_processing_common import ProcessorTesterMixin  # noqa: E402
from test_video_processing_common import VideoProcessingTestMixin, prepare_video_inputs  # noqa: E402

from videopanda.data.processing_videopanda import VideoPandaProcessor  # noqa: E402
from videopanda.data.video_processing_videopanda import VideoPandaVideoProcessor  # noqa: E402
from videopanda.model.llm import load_tokenizer  # noqa: E402

GEOMETRY = dict(image_size=56, teacher_image_size=28, num_frames=8, chunk_length=1)


class VideoPandaProcessorTest(ProcessorTesterMixin, unittest.TestCase):
    processor_class = VideoPandaProcessor

    @classmethod
    def _setup_tokenizer(cls):
        return load_tokenizer("smollm2")

    @classmethod
    def _setup_video_processor(cls):
        return VideoPandaVideoProcessor(**GEOMETRY)

    @staticmethod
    def prepare_processor_dict():
        return {{"template": "chat_template"}}


class VideoProcessorTester:
    def __init__(self, batch_size=3, num_frames=8, num_channels=3, min_resolution=30, max_resolution=80):
        self.batch_size, self.num_frames, self.num_channels = batch_size, num_frames, num_channels
        self.min_resolution, self.max_resolution = min_resolution, max_resolution

    def expected_output_video_shape(self, videos):
        return [self.num_frames, 4, GEOMETRY["image_size"], GEOMETRY["image_size"]]

    def prepare_video_inputs(self, equal_resolution=False, return_tensors="pil"):
        return prepare_video_inputs(self.batch_size, self.num_frames, self.num_channels, self.min_resolution,
                                    self.max_resolution, equal_resolution=equal_resolution,
                                    return_tensors=return_tensors)


class VideoPandaVideoProcessingTest(VideoProcessingTestMixin, unittest.TestCase):
    fast_video_processing_class = VideoPandaVideoProcessor
    test_cast_dtype = True

    def setUp(self):
        super().setUp()
        self.video_processor_tester = VideoProcessorTester()

    @property
    def video_processor_dict(self):
        return dict(GEOMETRY)

    def assert_expected_videos_shape(self, encoded_videos, expected_output_video_shape, num_videos):
        # the frames of every video concatenated: (F_total, 4, S, S)
        frames, *frame_shape = expected_output_video_shape
        self.assertEqual(tuple(encoded_videos.shape), (num_videos * frames, *frame_shape))
'''


def run_suite(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """{test id: (outcome, message)} of the generated suite; outcome passed | failed | skipped."""
    standins = tmp_path / "standins"
    standins.mkdir()
    (standins / "fetch_hub_objects_for_ci.py").write_text(FETCH_STANDIN)
    module = tmp_path / "test_processing_videopanda.py"
    module.write_text(textwrap.dedent(GENERATED.format(tests_root=str(transformers_tests_root()),
                                                       standins=str(standins))))
    report = tmp_path / "report.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                    "--rootdir", str(tmp_path), f"--junitxml={report}", str(module)],
                   cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    results = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = "skipped" if tag == "skipped" else "failed"
                message = (node.get("message") or "").splitlines()[0][:200] if node.get("message") else ""
        results[name] = (outcome, message)
    return results


def test_transformers_processor_mixins_pass_or_are_listed(tmp_path):
    results = run_suite(tmp_path)
    counts = {o: sum(1 for outcome, _ in results.values() if outcome == o) for o in ("passed", "failed", "skipped")}
    print(f"transformers' processor mixins: {counts}")  # shown with -s: the numbers the README quotes
    assert counts["passed"] > 0, "no mixin test ran"
    unlisted = {name: result for name, result in results.items() if result[0] != "passed" and name not in EXCEPTIONS}
    assert not unlisted, "failed or skipped, not listed in transformers_processor_test_exceptions.py:\n" + "\n".join(
        f"{name}: {outcome}: {message}" for name, (outcome, message) in sorted(unlisted.items()))
