"""CocoEvaluator end to end against torchvision's reference pattern and the fast backends.

Generates a COCO-val-sized synthetic set as tensors (5,000 images, 80 categories, ~36k
ground-truth boxes with ~1% crowd, 100 detections per image: jittered copies of the ground
truth and random boxes, mostly of the classes present in the image) and times, end to end
(updates in batches of 2 straight from the tensors, then the final metrics):

* ``reference``: torchvision's reference pattern, reproduced here: the ground truth converted
  to a pycocotools ``COCO`` first; per batch, result dicts, ``loadRes`` and ``evaluate`` on the
  batch's images, keeping the per-image results; at the end, merged, accumulated, summarized;
* ``detkit-pycocotools`` and ``detkit-hotcoco``: :class:`detkit.evaluation.CocoEvaluator`;
* ``hotcoco-stream``: hotcoco's own ``StreamingEval`` fed per batch (ground-truth dicts, the
  ``(N, 7)`` detection array), then ``finalize``/``accumulate``/``summarize``;
* ``hotcoco-integration``: ``hotcoco.integrations.CocoEvaluator`` (needs the ground truth as a
  COCO object up front, built from the targets here);
* ``faster-coco-eval``: its ``COCOeval_faster`` on the whole set (ground truth and detections
  as dicts); shown for reference only, it is not a detkit backend (not bit-exact).

Each method runs in its own subprocess, with the same libraries imported before the clock
starts (the time spent making synthetic masks inside a run is not counted). Memory is that
process's peak resident set (``ru_maxrss``), and that peak over the resident set just before
timing started (the generated tensors and imported libraries excluded). Timings are medians of
``--rounds`` (``--slow-rounds`` for the pycocotools-based methods, over a minute each at full
size on a loaded two-core machine). Every method's stats are compared with the reference's.

Goals (issue 6): detkit end to end within 1.5x of the fastest backend's own streamed time,
at least 20x faster than the reference pattern, peak memory no higher than the reference's.

Run: ``python benchmarks/bench_evaluator.py [--images 5000] [--rounds 3] [--slow-rounds 1]``
(``--images 500`` for a quick run; ``--iou-type segm`` for masks, at 320x240 px).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

METHODS = (
    "reference",
    "detkit-pycocotools",
    "detkit-hotcoco",
    "hotcoco-stream",
    "hotcoco-integration",
    "faster-coco-eval",
)
SLOW = {"reference", "detkit-pycocotools"}


# -- data ---------------------------------------------------------------------------------------


def generate(num_images: int, seed: int = 0, iou_type: str = "bbox"):
    """Per image: (target, prediction) tensors, mask tensors made lazily by ``batches``."""
    rng = np.random.default_rng(seed)
    samples = []
    next_id = 1
    for _ in range(num_images):
        if iou_type == "segm":
            height, width = 240, 320
        else:
            height, width = int(rng.integers(360, 641)), int(rng.integers(480, 641))
        n_gt = int(rng.poisson(7.3))
        wh = rng.uniform(4, 0.6 * min(width, height), (n_gt, 2))
        xy = rng.uniform(0, 1, (n_gt, 2)) * ([width, height] - wh)
        gt_boxes = np.concatenate([xy, xy + wh], 1)
        gt_labels = rng.integers(1, 81, n_gt)
        crowd = (rng.random(n_gt) < 0.01).astype(np.int64)
        n_copy = min(n_gt, 50)
        sides = np.tile(wh[:n_copy], 2)
        copies = gt_boxes[:n_copy] + rng.normal(0, 0.08, (n_copy, 4)) * sides
        n_rand = 100 - n_copy
        rwh = rng.uniform(4, 0.5 * min(width, height), (n_rand, 2))
        rxy = rng.uniform(0, 1, (n_rand, 2)) * ([width, height] - rwh)
        boxes = np.concatenate([copies, np.concatenate([rxy, rxy + rwh], 1)])
        boxes = np.clip(boxes, 0, [width, height, width, height])
        # Like a detector's output, most detections carry a class present in the image.
        present = gt_labels if n_gt else rng.integers(1, 81, 3)
        labels = np.concatenate([gt_labels[:n_copy], rng.choice(present, n_rand)])
        wrong = rng.random(100) < 0.1
        labels[wrong] = rng.integers(1, 81, int(wrong.sum()))
        scores = rng.random(100)
        target = {
            "boxes": torch.tensor(gt_boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(gt_labels, dtype=torch.int64),
            "area": torch.tensor(wh.prod(1), dtype=torch.float32),
            "iscrowd": torch.tensor(crowd),
            "image_id": next_id,
        }
        prediction = {
            "boxes": torch.tensor(boxes, dtype=torch.float32),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "scores": torch.tensor(scores, dtype=torch.float32),
        }
        samples.append((target, prediction, (height, width)))
        next_id += 1
    return samples


def _box_masks(boxes: torch.Tensor, height: int, width: int, jitter: float = 0.0) -> torch.Tensor:
    ys = torch.arange(height, dtype=torch.float32)[:, None]
    xs = torch.arange(width, dtype=torch.float32)[None, :]
    b = boxes[:, :, None, None]
    inside = (xs >= b[:, 0]) & (xs < b[:, 2]) & (ys >= b[:, 1]) & (ys < b[:, 3])
    return inside


GENERATION = {"seconds": 0.0}  # time spent making masks inside the timed runs, subtracted


def batches(samples, iou_type: str, batch_size: int = 2):
    """(predictions, targets) per batch; segm masks are made here, their time not counted."""
    for start in range(0, len(samples), batch_size):
        began = time.perf_counter()
        chunk = samples[start : start + batch_size]
        targets, predictions = [], []
        for target, prediction, (height, width) in chunk:
            if iou_type == "segm":
                target = {
                    **target,
                    "masks": _box_masks(target["boxes"], height, width).to(torch.uint8),
                }
                probs = _box_masks(prediction["boxes"], height, width).to(torch.float32) * 0.9
                prediction = {**prediction, "masks": probs[:, None]}
            targets.append(target)
            predictions.append(prediction)
        GENERATION["seconds"] += time.perf_counter() - began
        yield predictions, targets


# -- the methods --------------------------------------------------------------------------------


def _xywh(boxes: torch.Tensor) -> list:
    b = boxes.tolist()
    return [[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in b]


def _gt_dicts(samples, iou_type):
    from pycocotools import mask as mask_utils

    images, annotations = [], []
    for target, _, (height, width) in samples:
        images.append({"id": target["image_id"], "height": height, "width": width})
        if iou_type == "segm":
            began = time.perf_counter()
            masks = _box_masks(target["boxes"], height, width).numpy().astype(np.uint8)
            GENERATION["seconds"] += time.perf_counter() - began
        for i, (bbox, label, area, crowd) in enumerate(
            zip(
                _xywh(target["boxes"]),
                target["labels"].tolist(),
                target["area"].tolist(),
                target["iscrowd"].tolist(),
            )
        ):
            ann = {
                "id": len(annotations) + 1,
                "image_id": target["image_id"],
                "category_id": label,
                "bbox": bbox,
                "area": area,
                "iscrowd": crowd,
            }
            if iou_type == "segm":
                ann["segmentation"] = mask_utils.encode(np.asfortranarray(masks[i]))
            annotations.append(ann)
    categories = [{"id": c, "name": str(c)} for c in range(1, 81)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _results(predictions, targets, iou_type):
    from pycocotools import mask as mask_utils

    rows = []
    for prediction, target in zip(predictions, targets):
        scores, labels = prediction["scores"].tolist(), prediction["labels"].tolist()
        if iou_type == "segm":
            masks = (prediction["masks"][:, 0] > 0.5).numpy().astype(np.uint8)
            payload = [{"segmentation": mask_utils.encode(np.asfortranarray(m))} for m in masks]
        else:
            payload = [{"bbox": b} for b in _xywh(prediction["boxes"])]
        for extra, score, label in zip(payload, scores, labels):
            rows.append(
                {"image_id": target["image_id"], "category_id": label, "score": score, **extra}
            )
    return rows


def _quiet():
    return contextlib.redirect_stdout(io.StringIO())


def run_reference(samples, iou_type):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with _quiet():
        coco_gt = COCO()
        coco_gt.dataset = _gt_dicts(samples, iou_type)
        coco_gt.createIndex()
        coco_gt = copy.deepcopy(coco_gt)  # the reference evaluator keeps its own copy
        all_ids, all_evals = [], []
        evaluator = None
        for predictions, targets in batches(samples, iou_type):
            ids = [t["image_id"] for t in targets]
            results = _results(predictions, targets, iou_type)
            coco_dt = coco_gt.loadRes(results) if results else COCO()
            evaluator = COCOeval(coco_gt, coco_dt, iou_type)
            evaluator.params.imgIds = ids
            evaluator.evaluate()
            p = evaluator.params
            per_image = np.asarray(evaluator.evalImgs).reshape(
                len(p.catIds), len(p.areaRng), len(p.imgIds)
            )
            all_ids.extend(p.imgIds)
            all_evals.append(per_image)
        ids = np.array(all_ids)
        merged = np.concatenate(all_evals, axis=2)
        unique, index = np.unique(ids, return_index=True)
        evaluator.evalImgs = list(merged[..., index].flatten())
        evaluator.params.imgIds = list(unique)
        evaluator._paramsEval = copy.deepcopy(evaluator.params)
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats.tolist()


def run_detkit(samples, iou_type, backend):
    from detkit.evaluation import CocoEvaluator

    evaluator = CocoEvaluator(iou_type, backend=backend)
    for predictions, targets in batches(samples, iou_type):
        evaluator.update(predictions, targets)
    metrics = evaluator.compute()[iou_type]
    names = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    return [metrics[n] for n in names]


def run_hotcoco_stream(samples, iou_type):
    import hotcoco
    from pycocotools import mask as mask_utils

    categories = [{"id": c, "name": str(c)} for c in range(1, 81)]
    stream = hotcoco.StreamingEval(categories, iou_type)
    next_id = 1
    for predictions, targets in batches(samples, iou_type):
        images, gt = [], []
        rows, rles = [], []
        for prediction, target in zip(predictions, targets):
            image_id = target["image_id"]
            height, width = samples[image_id - 1][2]
            images.append({"id": image_id, "height": height, "width": width})
            masks = None
            if iou_type == "segm":
                masks = target["masks"].numpy()
            for i, (bbox, label, area, crowd) in enumerate(
                zip(
                    _xywh(target["boxes"]),
                    target["labels"].tolist(),
                    target["area"].tolist(),
                    target["iscrowd"].tolist(),
                )
            ):
                ann = {
                    "id": next_id,
                    "image_id": image_id,
                    "category_id": label,
                    "bbox": bbox,
                    "area": area,
                    "iscrowd": crowd,
                }
                if masks is not None:
                    ann["segmentation"] = mask_utils.encode(np.asfortranarray(masks[i]))
                gt.append(ann)
                next_id += 1
            boxes = prediction["boxes"].to(torch.float64)
            boxes[:, 2:] -= boxes[:, :2]
            n = len(boxes)
            block = torch.cat(
                [
                    torch.full((n, 1), float(image_id), dtype=torch.float64),
                    boxes,
                    prediction["scores"].to(torch.float64)[:, None],
                    prediction["labels"].to(torch.float64)[:, None],
                ],
                1,
            )
            rows.append(block.numpy())
            if iou_type == "segm":
                binary = (prediction["masks"][:, 0] > 0.5).to(torch.uint8)
                rles += mask_utils.encode(np.asfortranarray(binary.permute(1, 2, 0).numpy()))
        if iou_type == "segm":
            results = [
                {
                    "image_id": int(r[0]),
                    "category_id": int(r[6]),
                    "score": float(r[5]),
                    "segmentation": s,
                }
                for r, s in zip(np.concatenate(rows).tolist(), rles)
            ]
            stream.update(images, gt, results)
        else:
            stream.update(images, gt, np.concatenate(rows))
    with _quiet():
        evaluator = stream.finalize()
        evaluator.accumulate()
        evaluator.summarize()
    return list(evaluator.stats)


def run_hotcoco_integration(samples, iou_type):
    import hotcoco

    evaluator = hotcoco.integrations.CocoEvaluator(
        hotcoco.COCO(_gt_dicts(samples, iou_type)), [iou_type]
    )
    for predictions, targets in batches(samples, iou_type):
        evaluator.update({t["image_id"]: p for p, t in zip(predictions, targets)})
    with _quiet():
        evaluator.accumulate()
        evaluator.summarize()
    return list(evaluator.coco_eval[iou_type].stats)


def run_faster_coco_eval(samples, iou_type):
    from faster_coco_eval import COCO, COCOeval_faster

    results = []
    for predictions, targets in batches(samples, iou_type):
        results += _results(predictions, targets, iou_type)
    coco_gt = COCO(_gt_dicts(samples, iou_type))
    coco_dt = coco_gt.loadRes(results)
    evaluator = COCOeval_faster(coco_gt, coco_dt, iou_type, print_function=lambda *a, **k: None)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return list(evaluator.stats)


RUNNERS = {
    "reference": run_reference,
    "detkit-pycocotools": lambda s, t: run_detkit(s, t, "pycocotools"),
    "detkit-hotcoco": lambda s, t: run_detkit(s, t, "hotcoco"),
    "hotcoco-stream": run_hotcoco_stream,
    "hotcoco-integration": run_hotcoco_integration,
    "faster-coco-eval": run_faster_coco_eval,
}


# -- measurement --------------------------------------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker(method: str, images: int, rounds: int, iou_type: str) -> None:
    torch.set_num_threads(1)
    # Every method imports the same libraries before the clock and the memory baseline: a
    # training script has torchvision and the evaluator loaded anyway.
    import faster_coco_eval  # noqa: F401
    import hotcoco  # noqa: F401
    import pycocotools.cocoeval  # noqa: F401
    import torchvision  # noqa: F401

    import detkit.evaluation  # noqa: F401

    samples = generate(images, iou_type=iou_type)
    before = _rss_mb()
    times, stats = [], None
    for _ in range(rounds):
        GENERATION["seconds"] = 0.0
        start = time.perf_counter()
        stats = RUNNERS[method](samples, iou_type)
        times.append(time.perf_counter() - start - GENERATION["seconds"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "times": times,
                "stats": [float(s) for s in stats],
                "peak": peak,
                "over": peak - before,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--slow-rounds", type=int, default=1)
    parser.add_argument("--iou-type", choices=("bbox", "segm"), default="bbox")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.images, args.rounds, args.iou_type)
        return
    results = {}
    for method in args.methods.split(","):
        rounds = args.slow_rounds if method in SLOW else args.rounds
        command = [
            sys.executable,
            __file__,
            "--worker",
            method,
            "--images",
            str(args.images),
            "--rounds",
            str(rounds),
            "--iou-type",
            args.iou_type,
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            print(f"{method}: failed\n{done.stderr[-2000:]}")
            continue
        results[method] = json.loads(done.stdout.strip().splitlines()[-1])
        r = results[method]
        print(
            f"{method:<20} {statistics.median(r['times']):8.3f} s (median of {rounds})  "
            f"peak RSS {r['peak']:7.0f} MB  (+{r['over']:5.0f} MB over the data)  "
            f"AP {r['stats'][0]:.4f}",
            flush=True,
        )
    if "reference" in results:
        ref = np.array(results["reference"]["stats"])
        for method, r in results.items():
            diff = np.abs(np.array(r["stats"]) - ref).max()
            print(f"max |stats - reference| {method:<20} {diff:.3g}")
    median = {m: statistics.median(r["times"]) for m, r in results.items()}
    if "detkit-hotcoco" in median:
        ours = median["detkit-hotcoco"]
        if "hotcoco-stream" in median:
            print(
                f"detkit-hotcoco / hotcoco-stream: {ours / median['hotcoco-stream']:.2f}x (goal <= 1.5)"
            )
        if "hotcoco-integration" in median:
            print(
                f"detkit-hotcoco / hotcoco-integration: {ours / median['hotcoco-integration']:.2f}x"
            )
        if "reference" in median:
            print(
                f"reference / detkit-hotcoco: {median['reference'] / ours:.1f}x faster (goal >= 20)"
            )
            print(
                f"peak RSS detkit-hotcoco / reference: "
                f"{results['detkit-hotcoco']['peak'] / results['reference']['peak']:.2f} "
                f"(over the data: {results['detkit-hotcoco']['over']:.0f} MB vs "
                f"{results['reference']['over']:.0f} MB; goal <= 1)"
            )
    if "detkit-pycocotools" in median and "reference" in median:
        print(
            f"reference / detkit-pycocotools: {median['reference'] / median['detkit-pycocotools']:.2f}x"
        )


if __name__ == "__main__":
    main()
