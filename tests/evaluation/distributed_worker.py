"""One rank of the two-process evaluation test (run by test_distributed.py, not by pytest).

The test forks its ranks (no second import of torch); ``python distributed_worker.py RANK
WORLD_SIZE PORT OUT_DIR`` runs one by hand.
"""

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

NUM_IMAGES = 7


def data():
    options = {"max_gt": 6, "empty_predictions": 0.1}
    return _detection_case(np.random.default_rng(42), "segm", NUM_IMAGES, options)


def shard(rank: int, world_size: int) -> list[int]:
    """DistributedSampler's split without shuffling: padded with the first indices."""
    indices = list(range(NUM_IMAGES))
    total = -(-NUM_IMAGES // world_size) * world_size
    indices += indices[: total - NUM_IMAGES]
    return indices[rank::world_size]


def run(rank: int, world_size: int, port: str, out: Path) -> None:
    try:
        _run(rank, world_size, port, Path(out))
    except BaseException:
        (Path(out) / f"rank{rank}.error").write_text(traceback.format_exc())
        raise


def _run(rank: int, world_size: int, port: str, out: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    predictions, targets = data()
    mine = shard(rank, world_size)
    evaluator = CocoEvaluator(("bbox", "segm"))
    for start in range(0, len(mine), 2):
        batch = mine[start : start + 2]
        evaluator.update([predictions[i] for i in batch], [targets[i] for i in batch])
    report = {"local_images": evaluator.num_images, "metrics": evaluator.compute()}
    written = evaluator.write_results(out / "results.json", "segm")
    report["wrote"] = written is not None
    broken = CocoEvaluator(
        "segm",
        coco_gt={
            "images": [{"id": 1, "height": 4, "width": 4}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "segmentation": []}
            ],
            "categories": [{"id": 1}],
        },
    )
    broken.update(
        [
            {
                "boxes": torch.zeros(0, 4),
                "scores": torch.zeros(0),
                "labels": torch.zeros(0, dtype=torch.int64),
                "masks": torch.zeros(0, 1, 4, 4),
            }
        ],
        [1],
    )
    try:
        broken.compute()
    except ValueError as error:
        report["error"] = str(error)
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


if __name__ == "__main__":
    run(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))
