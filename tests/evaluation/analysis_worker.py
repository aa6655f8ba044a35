"""One rank of the two-process analysis test (run by test_analysis_distributed.py)."""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from strategies import _detection_case  # noqa: E402

from detkit.evaluation import CocoEvaluator  # noqa: E402

NUM_IMAGES = 9


def data():
    options = {"max_gt": 6, "num_classes": 3}
    return _detection_case(np.random.default_rng(7), "bbox", NUM_IMAGES, options)


def analysis(evaluator: CocoEvaluator) -> dict:
    """Everything the analysis methods return, as json."""
    metrics = evaluator.compute(confidence=0.9, resamples=30, seed=1)["bbox"]
    points = evaluator.operating_points()
    return {
        "intervals": [metrics["AP_interval"], metrics["AP50_interval"]],
        "points": points.to_dict(),
        "precision": points.precision.tolist(),
        "matrix": evaluator.confusion_matrix(thresholds=points).matrix.tolist(),
    }


def run(rank: int, world_size: int, port: str, out: Path) -> None:
    try:
        torch.set_num_threads(1)
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
        )
        predictions, targets = data()
        indices = list(range(NUM_IMAGES))
        indices += indices[: -(-NUM_IMAGES // world_size) * world_size - NUM_IMAGES]
        evaluator = CocoEvaluator("bbox")
        mine = indices[rank::world_size]
        evaluator.update([predictions[i] for i in mine], [targets[i] for i in mine])
        report = json.loads(json.dumps(analysis(evaluator)))
        (Path(out) / f"rank{rank}.json").write_text(json.dumps(report))
        dist.destroy_process_group()
    except BaseException:
        (Path(out) / f"rank{rank}.error").write_text(traceback.format_exc())
        raise
