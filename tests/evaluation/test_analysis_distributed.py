"""Operating points, confusion matrix and intervals from two gloo processes equal one's."""

from __future__ import annotations

import json
import multiprocessing
import socket

import analysis_worker as worker
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
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "detkit.evaluation", "analysis_worker"])
    port = str(free_port())
    ranks = [context.Process(target=worker.run, args=(r, 2, port, tmp_path)) for r in range(2)]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout=180)
    for rank, process in enumerate(ranks):
        error = tmp_path / f"rank{rank}.error"
        assert process.exitcode == 0, error.read_text() if error.exists() else process.exitcode
    predictions, targets = worker.data()
    single = CocoEvaluator("bbox")
    single.update(predictions, targets)
    expected = json.loads(json.dumps(worker.analysis(single)))
    for rank in range(2):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == expected
