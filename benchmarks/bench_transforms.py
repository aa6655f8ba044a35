"""Cost of the ``hflip`` training preset on top of ``InstanceMaskDataset.__getitem__``.

Writes a synthetic Penn-Fudan-layout folder with Penn-Fudan's image sizes (250-1000 px),
then times, on one thread, interleaved image by image and over several rounds (the median
of the rounds is kept, since these machines are shared and noisy; CPU time of this
process, so that time spent waiting for the other sessions' processes does not count):

* ``dataset[i]`` without transforms (decode + target derivation: the baseline);
* ``dataset[i]`` with ``hflip_preset()`` (``ToImage`` -> ``RandomHorizontalFlip(0.5)`` ->
  ``ToDtype(float32, scale=True)`` -> ``SanitizeBoxes``), seeded identically every round;
* ``dataset[i]`` with ``ToDtype(float32, scale=True)`` alone: the uint8-to-float conversion
  every model input needs, which is most of the preset's cost;
* the same with torchvision's own v2 pipeline for that policy (as
  ``references/detection/presets.py`` builds it with ``use_v2=True``), passed to the
  dataset as it is, for comparison.

Goal (issue 3): the preset adds at most 15% to ``__getitem__``.

Run: ``python benchmarks/bench_transforms.py [--images 60] [--rounds 7]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from detkit.data import InstanceMaskDataset, write_synthetic_pennfudan
from detkit.data.transforms import ToDtype, hflip_preset


def pairs(root: Path) -> list[tuple[Path, Path]]:
    images = sorted((root / "PNGImages").glob("*.png"))
    return [(p, root / "PedMasks" / f"{p.stem}_mask.png") for p in images]


def torchvision_hflip() -> v2.Compose:
    """torchvision's v2 reference policy, as ``references/detection/presets.py`` builds it;
    passed to the dataset as it is (detkit's samples are tv_tensors)."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.RandomHorizontalFlip(p=0.5),
            v2.ToDtype(torch.float, scale=True),
            v2.ConvertBoundingBoxFormat(tv_tensors.BoundingBoxFormat.XYXY),
            v2.SanitizeBoundingBoxes(),
            v2.ToPureTensor(),
        ]
    )


def one_round(datasets: dict[str, InstanceMaskDataset], totals: dict[str, float]) -> None:
    """Every variant reads image ``i`` before any reads ``i + 1`` (rotating their order), so
    that a change in the machine's load hits all of them alike."""
    names = list(datasets)
    for i in range(len(datasets[names[0]])):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            torch.manual_seed(i)  # the same flips for image i in every round and variant
            start = time.process_time()
            datasets[name][i]
            totals[name] += time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29's decoders
    with tempfile.TemporaryDirectory() as tmp:
        root = write_synthetic_pennfudan(tmp, args.images, seed=0, size_range=(250, 1000))
        samples = pairs(root)
        datasets = {
            "plain": InstanceMaskDataset(samples),
            "hflip": InstanceMaskDataset(samples, transforms=hflip_preset()),
            "to_float": InstanceMaskDataset(samples, transforms=ToDtype(torch.float32, scale=True)),
            "torchvision": InstanceMaskDataset(samples, transforms=torchvision_hflip()),
        }
        one_round(datasets, dict.fromkeys(datasets, 0.0))  # warm the page cache and dispatch
        times: dict[str, list[float]] = {name: [] for name in datasets}
        for _ in range(args.rounds):
            totals = dict.fromkeys(datasets, 0.0)
            one_round(datasets, totals)
            for name, total in totals.items():
                times[name].append(total / len(samples))
        med = {name: statistics.median(values) for name, values in times.items()}
        print(
            f"{len(samples)} images, 250-1000 px, median of {args.rounds} rounds, "
            "one thread, process CPU time"
        )
        print(f"  dataset[i], no transforms:           {med['plain'] * 1e3:7.3f} ms/image")
        print(f"  dataset[i], detkit hflip_preset():   {med['hflip'] * 1e3:7.3f} ms/image")
        print(f"  dataset[i], torchvision v2 hflip:    {med['torchvision'] * 1e3:7.3f} ms/image")
        print(f"  dataset[i], ToDtype alone:           {med['to_float'] * 1e3:7.3f} ms/image")
        print(f"with hflip_preset / without = {med['hflip'] / med['plain']:.3f}x   (goal <= 1.15x)")
        print(f"torchvision v2 hflip / without = {med['torchvision'] / med['plain']:.3f}x")
        print(f"ToDtype alone / without = {med['to_float'] / med['plain']:.3f}x")
        ours, theirs = med["hflip"] - med["plain"], med["torchvision"] - med["plain"]
        print(f"detkit preset's cost / torchvision v2 policy's cost = {ours / theirs:.2f}x")


if __name__ == "__main__":
    main()
