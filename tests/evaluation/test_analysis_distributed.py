"""Operating points, confusion matrix and intervals from two gloo processes equal one's."""

from __future__ import annotations

import json
import multiprocessing

import analysis_worker as worker
import pytest
from strategies import run_gloo_ranks

from detkit.evaluation import CocoEvaluator


@pytest.mark.skipif(
    "forkserver" not in multiprocessing.get_all_start_methods(), reason="needs a fork server"
)
def test_two_processes_equal_one(tmp_path):
    run_gloo_ranks("analysis_worker", worker.run, tmp_path)
    predictions, targets = worker.data()
    single = CocoEvaluator("bbox")
    single.update(predictions, targets)
    expected = json.loads(json.dumps(worker.analysis(single)))
    for rank in range(2):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == expected
