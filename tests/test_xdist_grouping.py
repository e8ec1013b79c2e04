"""The suite's guard against pytest-xdist handing out tests without their work units (conftest.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from conftest import pytest_xdist_node_collection_finished as check_units


def worker(dist: str) -> SimpleNamespace:
    return SimpleNamespace(config=SimpleNamespace(getvalue=lambda name: dist if name == "dist" else None))


def test_a_run_whose_tests_lost_their_unit_stops_with_a_usage_error():
    ids = ["tests/test_a.py::test_one@test_a", "tests/test_b.py::test_two[x@y]"]  # the '@' inside [] is a parameter
    with pytest.raises(pytest.exit.Exception, match=r"did not group 1 tests .*test_two\[x@y\].*pytest-xdist#1386") \
            as stopped:
        check_units(worker("loadgroup"), ids)
    assert stopped.value.returncode == pytest.ExitCode.USAGE_ERROR


def test_grouped_ids_and_other_distribution_modes_pass():
    check_units(worker("loadgroup"), ["tests/test_a.py::test_one@test_a", "tests/test_b.py::test_two[x@y]@test_b"])
    check_units(worker("load"), ["tests/test_a.py::test_one"])  # no units asked for: nothing to check
