"""How the evaluators' time and memory grow with the dataset: per image, from tensors.

bbox at 500, 5,000 and 20,000 images (100 detections each), segm at 100, 500 and 2,000 images
of 480x640 (30 float masks each), for detkit's ``CocoEvaluator`` (hotcoco backend),
torchvision's reference pattern and hotcoco's integration (the methods and workloads of
``bench_evaluator.py``). Each configuration runs in its own subprocess on one thread, so one
run's memory cannot pollute another's; memory is the subprocess's peak resident set over the
resident set before the clock (the generated tensors and the libraries excluded), per image.
``batches-only`` runs the same loop with no evaluator: its peak is the batches' own (a segm
batch's float masks are about 72 MB), which every method's peak includes; what an evaluator
holds itself is its peak over that one.
The same configuration's peak varies by up to ~12 MB from run to run when the heap's layout
is left to address and hash randomization (the batches-only loop alone peaked at +83 to +95
MB over 24 runs of 100 segm images). So each round runs every method under the same fixed
layout (``PYTHONHASHSEED`` = the round's number and, where ``setarch -R`` is allowed,
no address randomization; ``--random-layout`` turns this off): rounds differ from each
other, but within a round the evaluator's own memory (its peak over the batches-only loop's)
compares like with like. Memory is given as median [min-max] over the rounds, and the
evaluator's own from the maxima, from the medians and round by round.

A run predicted (from the same method at the previous size) to take longer than
``--max-seconds`` or to hold more than ``--max-memory-gb`` is not run: its figures are
extrapolated linearly from the largest size measured and marked so (a lower bound for the
reference pattern, whose per-batch ``loadRes`` re-indexes the whole ground truth, so its cost
per image grows with the dataset).

Goal (issue 17): detkit's cost per image flat (linear total time), its memory below the peers'.

Run: ``python benchmarks/bench_evaluator_scale.py [--rounds 1] [--max-seconds 300] [--quick]``
(``--quick``: a fifth of each size, bbox at 100, 1,000 and 4,000 images and segm at 20, 100 and
400, and runs predicted past 60 s left out: a few minutes on a loaded two-core machine; the full
sizes take a quarter of an hour or more there).
"""

from __future__ import annotations

import argparse
import json
import statistics

from bench_evaluator import LAYOUT, WORKLOADS, layout_command, run_subprocess, spread

SIZES = {"bbox": (500, 5000, 20000), "segm": (100, 500, 2000)}
#: ``--quick``: each size divided by this, and ``--max-seconds`` at most ``QUICK_SECONDS``.
QUICK_DIVISOR, QUICK_SECONDS = 5, 60.0
METHODS = ("detkit", "hotcoco-integration", "reference", "batches-only")


def study(iou_type: str, sizes, methods, rounds: int, max_seconds: float, max_gb: float):
    rows = []
    for method in methods:
        measured = None  # (images, wall s/image, CPU s/image, over MB/image) at the last size
        for images in sizes:
            workload = dict(WORKLOADS[iou_type], images=images)
            if measured is not None:
                wall_guess = measured[1] * images
                memory_guess = measured[3] * images / 1024
                if wall_guess > max_seconds or memory_guess > max_gb:
                    rows.append((method, images, None, measured))
                    print(
                        f"{iou_type} {method} {images}: not run (predicted {wall_guess:.0f} s, "
                        f"{memory_guess:.1f} GB)",
                        flush=True,
                    )
                    continue
            results = []
            for round_ in range(rounds):
                result = run_subprocess(method, workload, seed=round_)
                if isinstance(result, str):
                    print(f"{iou_type} {method} {images}: failed\n{result}", flush=True)
                    break
                results.append(result)
            if not results:
                continue
            rows.append((method, images, results, None))
            wall = statistics.median(r["seconds"] for r in results) / images
            cpu = statistics.median(r["cpu"] for r in results) / images
            over = max(r["over_mb"] for r in results) / images
            measured = (images, wall, cpu, over)
            print(
                f"{iou_type} {method} {images}: {wall * 1000:.3f} ms/image wall, "
                f"{cpu * 1000:.3f} CPU, +{over:.3f} MB/image",
                flush=True,
            )
    return rows


def table(iou_type: str, rows) -> None:
    print(f"\n== {iou_type}: per image, one thread (median [min-max] of the rounds) ==")
    print(
        f"{'method':<20} {'images':>6} {'wall ms/image':>22} {'CPU ms/image':>22} "
        f"{'peak MB':>8} {'+MB/image':>10} {'over the data MB':>22}"
    )
    for method, images, results, extrapolated in rows:
        if results is None:
            base, wall, cpu, over = extrapolated
            print(
                f"{method:<20} {images:>6} {wall * 1000:>22.3f} {cpu * 1000:>22.3f} "
                f"{'':>8} {over:>10.3f}  extrapolated from {base} images (not run)"
            )
            continue
        wall = [1000 * r["seconds"] / images for r in results]
        cpu = [1000 * r["cpu"] / images for r in results]
        peak = max(r["peak_mb"] for r in results)
        over = max(r["over_mb"] for r in results) / images
        over_mb = [r["over_mb"] for r in results]
        print(
            f"{method:<20} {images:>6} {spread(wall):>22} {spread(cpu):>22} {peak:>8.0f} "
            f"{over:>10.3f} {spread(over_mb):>22}"
        )
    ours = [(i, r) for m, i, r, _ in rows if m == "detkit" and r]
    if len(ours) > 1:
        per_image = [statistics.median(x["cpu"] for x in r) / i for i, r in ours]
        print(
            f"detkit CPU per image, largest / smallest size: {per_image[-1] / per_image[0]:.2f}"
            " (flat: 1)"
        )
    for images, _ in ours:  # with a single size too
        for label, pick in (("max", max), ("median", statistics.median)):
            _memory_line(rows, images, label, pick)


def _memory_line(rows, images: int, label: str, pick) -> None:
    """Each method's peak over the data at ``images`` (``pick`` of the rounds), and over the
    batches-only loop's: ``pick`` of each side, and ``pick`` of the differences round by
    round (with a fixed layout per round, see ``layout_command``, those compare runs of the
    same layout). The heap's layout differs from run to run under randomization: the same
    run's peak varies by several MB, so compare many rounds, not single figures."""
    found = {m: r for m, i, r, _ in rows if i == images and r}
    peaks = [(m, pick([x["over_mb"] for x in r])) for m, r in found.items()]
    text = ", ".join(f"{m} +{mb:.0f} MB" for m, mb in peaks)
    print(f"memory over the data at {images} images ({label} of the rounds): {text}")
    loop = dict(peaks).get("batches-only")
    if loop is None:
        return
    own = ", ".join(f"{m} {mb - loop:+.0f} MB" for m, mb in peaks if m != "batches-only")
    print(f"  over the batches-only loop's peak (the evaluator's own): {own}")
    paired = []
    for method, results in found.items():
        if method != "batches-only" and len(results) == len(found["batches-only"]):
            differences = [
                a["over_mb"] - b["over_mb"] for a, b in zip(results, found["batches-only"])
            ]
            paired.append(f"{method} {pick(differences):+.0f} MB")
    if paired:
        print(f"  round by round, {label} of the differences: {', '.join(paired)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iou-types", default="bbox,segm")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=300)
    parser.add_argument("--max-memory-gb", type=float, default=6)
    parser.add_argument("--sizes", help="override the sizes, e.g. 50,100")
    parser.add_argument(
        "--quick", action="store_true", help="a fifth of each size, runs past 60 s left out"
    )
    parser.add_argument("--json", help="also write every run's figures to this file")
    parser.add_argument(
        "--random-layout",
        action="store_true",
        help="leave hash and address randomization on (by default each round fixes its own)",
    )
    args = parser.parse_args()
    LAYOUT["fixed"] = not args.random_layout
    print(f"memory layout: {layout_command([], {}, 0)[1]}")
    everything = {}
    for iou_type in args.iou_types.split(","):
        sizes = SIZES[iou_type]
        max_seconds = args.max_seconds
        if args.quick:
            sizes = tuple(s // QUICK_DIVISOR for s in sizes)
            max_seconds = min(max_seconds, QUICK_SECONDS)
        if args.sizes:
            sizes = tuple(int(s) for s in args.sizes.split(","))
        print(f"{iou_type}: sizes {sizes}, runs predicted past {max_seconds:.0f} s left out")
        rows = study(
            iou_type,
            sizes,
            args.methods.split(","),
            args.rounds,
            max_seconds,
            args.max_memory_gb,
        )
        table(iou_type, rows)
        everything[iou_type] = rows
    if args.json:
        with open(args.json, "w") as file:
            json.dump(everything, file, indent=1)


if __name__ == "__main__":
    main()
