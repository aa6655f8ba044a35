"""CocoEvaluator end to end from tensors, against torchvision's reference pattern and hotcoco.

Workloads (synthetic, COCO-val shaped; see ``evaluation_workloads.py``), updates in batches of
2 straight from the tensors, then the final statistics:

* ``bbox``: 500 images, 100 detections each, 80 categories; ``bbox-5000``: 5,000 images;
* ``segm``: 120 images of 480x640, 30 float mask probabilities per image (Mask R-CNN-like:
  zero outside each pasted box), uint8 ground-truth masks;
* ``keypoints``: 1,000 images, 20 person detections of 17 keypoints each.

Methods (``evaluation_methods.py``): ``detkit`` (hotcoco backend), ``detkit-pycocotools``,
``reference`` (torchvision's reference pattern), ``hotcoco-integration`` (hotcoco's drop-in for
torchvision's evaluator) and ``hotcoco-stream`` (hotcoco's raw ``StreamingEval`` fed the same
data with the least user code). Every run is one subprocess on one thread (``--threads``;
torch's and hotcoco's Rust pool, ``RAYON_NUM_THREADS``; ``torch`` and every library imported
before the clock, and the setup's objects collected and frozen with ``gc.freeze()``, so that
a full garbage collection inside a run walks only what the run made; the time spent making masks is not counted);
rounds interleave the methods, so each round's ratios compare runs made under the same load
(these machines are shared). Both wall and CPU seconds (the process's, the mask generation's
subtracted) are reported as median [min-max] over the rounds, and the ratios of the medians
with the range of the per-round ratios: on a loaded two-core machine a process gets a varying
share of a core, so CPU time is the steadier measure and wall time the one a user waits.
Page faults (median) count the fresh memory pages a run touched: on a virtual machine that
hands freed memory back to its host each costs 10 µs or more, and they explain much of the
spread between rounds. Memory is the subprocess's peak resident set (``ru_maxrss``) and that
peak over the resident set just before timing (the generated data and the libraries
excluded); each round runs under its own fixed memory layout (``layout_command``). Every
method's statistics are compared with ``detkit-pycocotools`` (exactly: difference 0).

Goals (issue 17): segm at most 0.7x the time of hotcoco's integration; bbox at most 1.2x
hotcoco's raw stream at 500 and 5,000 images and at least 20x faster than the reference.

Run: ``python benchmarks/bench_evaluator.py [--workloads bbox,bbox-5000,segm,keypoints]
[--rounds 5] [--slow-rounds 1] [--methods ...] [--baseline-src ../other-checkout/src]``
(``--baseline-src`` adds ``detkit-baseline``: detkit imported from another checkout, for
before/after ratios in the same run).
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

WORKLOADS = {
    "bbox": {"iou_type": "bbox", "images": 500, "detections": 100},
    "bbox-5000": {"iou_type": "bbox", "images": 5000, "detections": 100},
    "segm": {"iou_type": "segm", "images": 120, "detections": 30, "size": (480, 640)},
    "keypoints": {"iou_type": "keypoints", "images": 1000, "detections": 20, "categories": 1},
}
METHODS = ("detkit", "hotcoco-stream", "hotcoco-integration", "reference", "detkit-pycocotools")
SLOW = {"reference", "detkit-pycocotools"}
#: (numerator, denominator, goal, "<=" or ">=") ratios printed per workload.
GOALS = {
    "bbox": [("detkit", "hotcoco-stream", 1.2, "<="), ("reference", "detkit", 20, ">=")],
    "segm": [("detkit", "hotcoco-integration", 0.7, "<=")],
}


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker(method: str, workload: dict) -> dict:
    """One timed run of ``method`` on ``workload`` in this process."""
    import torch

    torch.set_num_threads(int(os.environ.get("RAYON_NUM_THREADS", "1")))
    # The same libraries for every method, imported before the clock and the memory baseline
    # (a training script has them loaded anyway).
    import evaluation_methods
    import evaluation_workloads
    import hotcoco  # noqa: F401
    import pycocotools.cocoeval  # noqa: F401
    import torchvision  # noqa: F401

    import detkit.evaluation  # noqa: F401

    options = {k: v for k, v in workload.items() if k != "images"}
    samples = evaluation_workloads.generate(workload["images"], **options)
    # The setup's objects collected and frozen: a full collection walks every object the
    # process holds (torch's modules, the generated samples), 0.2 s here, and whether one
    # fell inside a run hung on a few allocations more or less (0.08 s or 0.3 s for the same
    # 500-image bbox run). Frozen, collections inside a run walk only what the run made.
    gc.collect()
    gc.freeze()
    before = _rss_mb()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start, cpu = time.perf_counter(), time.process_time()
    stats = evaluation_methods.RUNNERS[method](samples, workload["iou_type"])
    seconds = time.perf_counter() - start - evaluation_workloads.GENERATION["seconds"]
    cpu = time.process_time() - cpu - evaluation_workloads.GENERATION["cpu"]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak = usage.ru_maxrss / 1024
    return {
        "faults": usage.ru_minflt - faults,
        "seconds": seconds,
        "cpu": cpu,
        "stats": [float(s) for s in stats],
        "peak_mb": peak,
        "over_mb": peak - before,
    }


#: Where ``detkit-baseline`` imports detkit from (``--baseline-src``): another checkout.
BASELINE = {"src": None}


#: Threads per run, for torch and for hotcoco's Rust pool (``RAYON_NUM_THREADS``): without
#: the variable, hotcoco matches large calls on every core, and a CPU-time ratio then counts
#: the second core's work against the method that made large calls.
THREADS = {"count": 1}


#: Whether rounds run under a fixed memory layout (see :func:`layout_command`).
LAYOUT = {"fixed": True}


@functools.cache
def _setarch() -> list[str]:
    """``setarch -R`` (address randomization off for the child) where it works here."""
    if shutil.which("setarch") is None:
        return []
    probe = subprocess.run(["setarch", "-R", "true"], capture_output=True)
    return ["setarch", "-R"] if probe.returncode == 0 else []


def layout_command(command: list[str], env: dict, seed: int | None) -> tuple[list[str], str]:
    """``command`` run under the memory layout of round ``seed``, and a description of it.

    A process's peak resident set depends on its heap's layout, which address and hash
    randomization change from run to run: the same run of 500 segm images peaked 12 MB apart.
    With ``seed``, the child runs with ``PYTHONHASHSEED=seed`` and, where ``setarch -R`` is
    allowed, without address randomization: every method of one round then gets the same
    layout, rounds get different ones, and a round's memory differences are paired.
    """
    if seed is None or not LAYOUT["fixed"]:
        return command, "random layout"
    env["PYTHONHASHSEED"] = str(seed)
    prefix = _setarch()
    fixed = "hash seed" + (" and addresses" if prefix else " only (setarch -R not allowed)")
    return prefix + command, f"{fixed} fixed per round"


def run_subprocess(method: str, workload: dict, seed: int | None = None) -> dict | str:
    """``worker`` in a fresh process (under round ``seed``'s layout); its result, or the
    error text."""
    env = dict(os.environ)
    env["RAYON_NUM_THREADS"] = str(THREADS["count"])
    if method == "detkit-baseline":
        env["PYTHONPATH"] = os.pathsep.join([BASELINE["src"], env.get("PYTHONPATH", "")])
        method = "detkit"
    command = [sys.executable, __file__, "--worker", method, "--workload", json.dumps(workload)]
    command, _ = layout_command(command, env, seed)
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        return done.stderr[-1500:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3g}"
    return f"{statistics.median(values):.3g} [{min(values):.3g}-{max(values):.3g}]"


def measure(name: str, workload: dict, methods: list[str], rounds: int, slow_rounds: int):
    """Interleaved rounds of every method; prints the table, ratios and exactness."""
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    for round_ in range(rounds):
        for method in methods:
            if method in SLOW and round_ >= slow_rounds:
                continue
            result = run_subprocess(method, workload, seed=round_)
            if isinstance(result, str):
                print(f"{name} {method}: failed\n{result}", flush=True)
                continue
            runs[method].append(result)
    runs = {m: r for m, r in runs.items() if r}
    report(name, workload, runs)
    return runs


def report(name: str, workload: dict, runs: dict[str, list[dict]]) -> None:
    """The table (wall and CPU seconds, per image, memory), exactness and ratios."""
    images = workload["images"]
    print(
        f"\n== {name}: {images} images, {workload['detections']} detections each "
        f"({workload['iou_type']}), {_threads()}; median [min-max] over the rounds =="
    )
    print(
        f"{'method':<20} {'wall s':>24} {'CPU s':>24} {'CPU ms/image':>12} "
        f"{'page faults':>11} {'peak MB':>8}"
    )
    for method, results in runs.items():
        wall, cpu = [r["seconds"] for r in results], [r["cpu"] for r in results]
        faults = statistics.median(r.get("faults", 0) for r in results)
        print(
            f"{method:<20} {spread(wall):>24} {spread(cpu):>24} "
            f"{1000 * statistics.median(cpu) / images:12.3f} {faults:11.0f} "
            f"{max(r['peak_mb'] for r in results):8.0f} (+{max(r['over_mb'] for r in results):.0f}"
            f" over the data; {len(results)} rounds)",
            flush=True,
        )
    exact = runs.get("detkit-pycocotools") or runs.get("reference")
    if exact:
        reference = exact[0]["stats"]
        for method, results in runs.items():
            worst = max(max(abs(a - b) for a, b in zip(r["stats"], reference)) for r in results)
            print(f"max |stats - pycocotools| {method:<20} {worst:.3g}")
    goals = {(a, b): (goal, sense) for a, b, goal, sense in GOALS.get(workload["iou_type"], [])}
    for other in runs:
        if other == "detkit" or "detkit" not in runs:
            continue
        pair = (other, "detkit") if (other, "detkit") in goals else ("detkit", other)
        line = f"{pair[0]} / {pair[1]}:"
        for key, label in (("cpu", "CPU"), ("seconds", "wall")):
            top = [r[key] for r in runs[pair[0]]]
            bottom = [r[key] for r in runs[pair[1]]]
            median = statistics.median(top) / statistics.median(bottom)
            paired = [a / b for a, b in zip(top, bottom, strict=False)]
            line += f"  {label} {median:.2f}x (per round {spread(paired)})"
            if pair in goals:
                goal, sense = goals[pair]
                met = median <= goal if sense == "<=" else median >= goal
                line += f" goal {sense} {goal}: {'met' if met else 'NOT met'};"
        print(line, flush=True)


def _threads() -> str:
    count = THREADS["count"]
    return "one thread" if count == 1 else f"{count} threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="bbox,bbox-5000,segm,keypoints")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--slow-rounds", type=int, default=1)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--images", type=int, help="override every workload's image count")
    parser.add_argument("--json", help="also write every run's figures to this file")
    parser.add_argument(
        "--baseline-src",
        help="a detkit checkout's src/ to time as method 'detkit-baseline' (before/after)",
    )
    parser.add_argument(
        "--random-layout",
        action="store_true",
        help="leave hash and address randomization on (by default each round fixes its own)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="threads per run (torch and hotcoco), default 1"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, json.loads(args.workload))))
        return
    LAYOUT["fixed"] = not args.random_layout
    THREADS["count"] = args.threads
    print(f"memory layout: {layout_command([], {}, 0)[1]}")
    methods = args.methods.split(",")
    if args.baseline_src:
        BASELINE["src"] = os.path.abspath(args.baseline_src)
        if "detkit-baseline" not in methods:
            methods.insert(1, "detkit-baseline")
    everything = {}
    for name in args.workloads.split(","):
        workload = dict(WORKLOADS[name])
        if args.images:
            workload["images"] = args.images
        runs = measure(name, workload, methods, args.rounds, args.slow_rounds)
        everything[name] = {"workload": workload, "runs": runs}
    if args.json:
        with open(args.json, "w") as file:
            json.dump(everything, file, indent=1)


if __name__ == "__main__":
    main()
