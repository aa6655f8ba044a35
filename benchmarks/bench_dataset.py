"""InstanceMaskDataset speed against the floor of decoding its files.

Writes a synthetic Penn-Fudan-layout folder with Penn-Fudan's image sizes (250-1000 px), then
times, on one thread and interleaved over several rounds (the median is kept, since these
machines are shared and noisy):

* the floor: decoding each image (to RGB) and its mask into arrays, nothing else, with PIL
  (the anchors' definition) and with ``torchvision.io.decode_image`` (faster, and what the
  dataset itself uses); the goal is judged against the faster of the two;
* ``InstanceMaskDataset.__getitem__`` without transforms (the whole target derived);
* ``get_height_and_width`` on a fresh dataset (header reads, no cache).

Goals (issue 2): ``__getitem__`` at most 1.15x the floor (the tutorial's dataset class
measured 1.39x on these machines); ``get_height_and_width`` at least 100x faster than
``__getitem__``.

Run: ``python benchmarks/bench_dataset.py [--images 60] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image

from detkit.data import InstanceMaskDataset, write_synthetic_pennfudan


def pairs(root: Path) -> list[tuple[Path, Path]]:
    images = sorted((root / "PNGImages").glob("*.png"))
    return [(p, root / "PedMasks" / f"{p.stem}_mask.png") for p in images]


def floor(samples: list[tuple[Path, Path]]) -> None:
    for image_path, mask_path in samples:
        with Image.open(image_path) as image:
            np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
        with Image.open(mask_path) as mask:
            np.asarray(mask)


def floor_torchvision(samples: list[tuple[Path, Path]]) -> None:
    for image_path, mask_path in samples:
        decode_image(str(image_path), mode=ImageReadMode.RGB)
        decode_image(str(mask_path), mode=ImageReadMode.UNCHANGED)


def getitem(dataset: InstanceMaskDataset) -> None:
    for i in range(len(dataset)):
        dataset[i]


def sizes(samples: list[tuple[Path, Path]]) -> None:
    dataset = InstanceMaskDataset(samples, check_files=False)  # fresh: nothing cached
    for i in range(len(dataset)):
        dataset.get_height_and_width(i)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29's decoders
    with tempfile.TemporaryDirectory() as tmp:
        root = write_synthetic_pennfudan(tmp, args.images, seed=0, size_range=(250, 1000))
        samples = pairs(root)
        dataset = InstanceMaskDataset(samples)
        times: dict[str, list[float]] = {"floor": [], "floor_tv": [], "getitem": [], "sizes": []}
        floor(samples)  # warm the page cache
        for _ in range(args.rounds):
            for name, run in (
                ("floor", lambda: floor(samples)),
                ("floor_tv", lambda: floor_torchvision(samples)),
                ("getitem", lambda: getitem(dataset)),
                ("sizes", lambda: sizes(samples)),
            ):
                start = time.perf_counter()
                run()
                times[name].append((time.perf_counter() - start) / len(samples))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{len(samples)} images, 250-1000 px, median of {args.rounds} rounds, one thread")
        print(f"  decode floor (PIL image + mask): {med['floor'] * 1e3:7.3f} ms/image")
        print(f"  decode floor (torchvision.io):   {med['floor_tv'] * 1e3:7.3f} ms/image")
        print(f"  InstanceMaskDataset.__getitem__: {med['getitem'] * 1e3:7.3f} ms/image")
        print(f"  get_height_and_width (header):   {med['sizes'] * 1e3:7.3f} ms/image")
        fastest = min(med["floor"], med["floor_tv"])
        print(f"__getitem__ / PIL decode floor = {med['getitem'] / med['floor']:.3f}x")
        print(
            f"__getitem__ / fastest decode floor = {med['getitem'] / fastest:.3f}x   (goal <= 1.15x)"
        )
        print(
            f"__getitem__ / get_height_and_width = {med['getitem'] / med['sizes']:.0f}x   (goal >= 100x)"
        )


if __name__ == "__main__":
    main()
