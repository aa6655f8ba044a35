"""Two gloo processes, each updating its DistributedSampler shard, equal one process."""

from __future__ import annotations

import json
import multiprocessing

import distributed_worker as worker
import pytest
from strategies import run_gloo_ranks

from detkit.evaluation import CocoEvaluator


@pytest.mark.skipif(
    "forkserver" not in multiprocessing.get_all_start_methods(), reason="needs a fork server"
)
def test_two_processes_equal_one(tmp_path):
    run_gloo_ranks("distributed_worker", worker.run, tmp_path)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]

    predictions, targets = worker.data()
    single = CocoEvaluator(("bbox", "segm"))
    single.update(predictions, targets)
    expected = json.loads(json.dumps(single.compute()))  # per-class keys as in the reports

    assert [r["local_images"] for r in reports] == [4, 4]  # rank 1 holds the padded copy
    assert reports[0]["metrics"] == expected
    assert reports[1]["metrics"] == expected
    assert expected["num_images"] == worker.NUM_IMAGES
    assert [r["wrote"] for r in reports] == [True, False]
    written = json.loads((tmp_path / "results.json").read_text())
    assert sorted(map(json.dumps, written)) == sorted(map(json.dumps, single.results("segm")))
    for report in reports:  # an error on the evaluating rank reaches every rank, no deadlock
        assert "has no segmentation" in report["error"]
