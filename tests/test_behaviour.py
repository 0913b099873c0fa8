"""Refactorings leave the numbers alone: a fixed set of short runs (every
estimator on digits, the sequence task under each conditioning type, the toy)
ends with exactly the final metrics recorded in tests/data/behaviour.json.
Re-record with `python -m tests.behaviour` only when a change of numbers is
intended, and say why in the commit."""
from __future__ import annotations

import json

import pytest

from tests.behaviour import FILE, RUNS, final_metrics

RECORDED = json.loads(FILE.read_text())


def test_recorded_set_is_the_current_set():
    assert sorted(RECORDED) == sorted(RUNS)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RUNS))
def test_final_metrics_unchanged(name):
    assert final_metrics(RUNS[name]) == RECORDED[name]
