"""Two gloo processes, each updating its DistributedSampler shard, equal one process."""

from __future__ import annotations

import json
import multiprocessing
import socket

import distributed_worker as worker
import pytest

from detkit.evaluation import CocoEvaluator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(
    "forkserver" not in multiprocessing.get_all_start_methods(), reason="needs a fork server"
)
def test_two_processes_equal_one(tmp_path):
    # A fork server imports torch and detkit once, then forks clean ranks: spawning imports
    # them once per rank (most of a minute on a loaded two-core machine), and forking this
    # process would copy thread pools (hotcoco's) whose threads do not survive a fork.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "detkit.evaluation", "distributed_worker"])
    port = str(free_port())
    ranks = [context.Process(target=worker.run, args=(r, 2, port, tmp_path)) for r in range(2)]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout=180)
    for rank, process in enumerate(ranks):
        error = tmp_path / f"rank{rank}.error"
        assert process.exitcode == 0, error.read_text() if error.exists() else process.exitcode
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
