"""Two gloo processes, each updating its DistributedSampler shard, equal one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import distributed_worker as worker

from detkit.evaluation import CocoEvaluator

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one(tmp_path):
    port = str(free_port())
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(HERE.parents[1] / "src"), os.environ.get("PYTHONPATH", "")]
        ),
    }
    ranks = [
        subprocess.Popen(
            [
                sys.executable,
                str(HERE / "distributed_worker.py"),
                str(rank),
                "2",
                port,
                str(tmp_path),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(2)
    ]
    for process in ranks:
        output, _ = process.communicate(timeout=180)
        assert process.returncode == 0, output
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
