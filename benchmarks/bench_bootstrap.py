"""The cost of bootstrap AP intervals against ``CocoEvaluator.compute()`` alone, same run.

Workload (``evaluation_workloads.py``): a validation set of ``--images`` synthetic COCO-shaped
images (default 300; ~7 ground-truth boxes over 80 categories and 100 detections each), fed
to one evaluator in batches of 2. Then, alternating, ``compute()`` and
``compute(confidence=0.95, resamples=R, seed=0)`` (the same evaluator: the second adds the
per-detection matching and R re-accumulations). Prints the median seconds of each over the
rounds and the ratio (bootstrap run / plain run), with the per-round range, plus
``operating_points()`` and ``confusion_matrix()`` for scale. One torch thread; the backend is
the evaluator's default (hotcoco when installed).

Run: ``python benchmarks/bench_bootstrap.py [--images 300] [--resamples 200] [--rounds 5]
[--iou-type bbox]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from evaluation_workloads import batches, generate

from detkit.evaluation import CocoEvaluator


def _timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iou-type", default="bbox", choices=("bbox", "segm"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    options = {"size": (240, 320), "detections": 30} if args.iou_type == "segm" else {}
    samples = generate(args.images, iou_type=args.iou_type, **options)
    evaluator = CocoEvaluator(args.iou_type)
    for predictions, targets in batches(samples, args.iou_type):
        evaluator.update(predictions, targets)
    plain, boot = [], []
    for _ in range(args.rounds):
        seconds, metrics = _timed(evaluator.compute)
        plain.append(seconds)
        seconds, with_ci = _timed(
            lambda: evaluator.compute(confidence=0.95, resamples=args.resamples, seed=0)
        )
        boot.append(seconds)
        assert with_ci[args.iou_type]["AP"] == metrics[args.iou_type]["AP"]
    points_s, points = _timed(lambda: evaluator.operating_points(args.iou_type))
    matrix_s, _ = _timed(lambda: evaluator.confusion_matrix(args.iou_type, thresholds=points))
    stats = with_ci[args.iou_type]
    ratios = [b / p for b, p in zip(boot, plain)]
    print(
        f"{args.iou_type}, {args.images} images, {args.resamples} resamples, "
        f"backend {evaluator.backend}, 1 torch thread, {args.rounds} rounds"
    )
    print(
        f"AP {stats['AP']:.4f} in [{stats['AP_interval'][0]:.4f}, {stats['AP_interval'][1]:.4f}]"
        f", AP50 {stats['AP50']:.4f} in [{stats['AP50_interval'][0]:.4f}, "
        f"{stats['AP50_interval'][1]:.4f}] (95%)"
    )
    print(f"compute():                  median {statistics.median(plain):.3f} s")
    print(f"compute(confidence=0.95):   median {statistics.median(boot):.3f} s")
    print(
        f"ratio bootstrap run / plain run: {statistics.median(boot) / statistics.median(plain):.2f}"
        f" (per round {min(ratios):.2f}-{max(ratios):.2f})"
    )
    print(f"operating_points(): {points_s:.3f} s, confusion_matrix(): {matrix_s:.3f} s")


if __name__ == "__main__":
    main()
