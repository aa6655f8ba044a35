"""Aspect-ratio grouping from image headers against the decode-every-sample fallback.

Writes ``--images`` synthetic Penn-Fudan-layout samples (an RGB PNG and an 8-bit instance
mask each; small, ``--size-range`` px a side, so that 10,000 of them write in seconds) and
times ``create_aspect_ratio_groups(dataset, k=3)`` on one thread:

* **headers**: on an :class:`~detkit.data.InstanceMaskDataset` (built fresh each round, so
  its size cache is empty): each image's size comes from its PNG header;
* **fallback**: on the same dataset behind a wrapper that hides ``get_height_and_width``,
  which is what torchvision's reference (and detkit, with a warning) must then do: load every
  sample (image and mask decoded, target derived) to learn its size;
* **coco json** (for information): on a :class:`~detkit.data.CocoJsonDataset` of the same
  images, where sizes come from the already-parsed annotation file.

Both main paths run over all images each round; the median of the rounds is kept, since these
machines are shared and noisy. Small images flatter the fallback: decoding a real photo takes
milliseconds while its header still takes microseconds, so with real data the ratio is larger.

The issue sets no figure; the point is the ratio, printed last.

Run: ``python benchmarks/bench_grouping.py [--images 10000] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from detkit.data import CocoJsonDataset, InstanceMaskDataset, create_aspect_ratio_groups


class Hidden(torch.utils.data.Dataset):
    """The dataset without ``get_height_and_width``: the grouping must load samples."""

    def __init__(self, dataset: InstanceMaskDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int):
        return self.dataset[idx]


def write_samples(root: Path, count: int, size_range: tuple[int, int], seed: int = 0):
    """``count`` (image, mask) PNG pairs and a COCO file listing the images; fast to write."""
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rng = np.random.default_rng(seed)
    pairs, images = [], []
    for index in range(count):
        height, width = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
        pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        mask = np.zeros((height, width), dtype=np.uint8)
        mask[height // 4 : height // 2, width // 4 : width // 2] = 1
        image_path, mask_path = root / "images" / f"{index}.png", root / "masks" / f"{index}.png"
        Image.fromarray(pixels, "RGB").save(image_path, compress_level=1)
        Image.fromarray(mask, "L").save(mask_path, compress_level=1)
        pairs.append((image_path, mask_path))
        images.append(
            {"id": index + 1, "file_name": f"{index}.png", "height": height, "width": width}
        )
    annotations = {"images": images, "annotations": [], "categories": [{"id": 1, "name": "a"}]}
    (root / "annotations.json").write_text(json.dumps(annotations))
    return pairs


def timed(function) -> tuple[float, list[int]]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size-range", type=int, nargs=2, default=(32, 64))
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # the fallback's warning is expected here
    logging.disable(logging.INFO)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        pairs = write_samples(root, args.images, tuple(args.size_range))
        print(
            f"wrote {args.images} image + mask PNG pairs ({args.size_range[0]}-"
            f"{args.size_range[1]} px a side) in {time.perf_counter() - start:.1f} s"
        )
        coco = CocoJsonDataset(root / "images", root / "annotations.json", check_files=False)
        times: dict[str, list[float]] = {"headers": [], "fallback": [], "coco": []}
        reference = None
        for _ in range(args.rounds):
            fresh = InstanceMaskDataset(pairs, check_files=False)
            seconds, groups = timed(lambda d=fresh: create_aspect_ratio_groups(d, k=3))
            times["headers"].append(seconds)
            seconds, slow_groups = timed(lambda d=fresh: create_aspect_ratio_groups(Hidden(d), k=3))
            times["fallback"].append(seconds)
            seconds, coco_groups = timed(lambda: create_aspect_ratio_groups(coco, k=3))
            times["coco"].append(seconds)
            if not groups == slow_groups == coco_groups:
                raise SystemExit("the three paths disagree on the groups")
            reference = groups
        median = {name: statistics.median(values) for name, values in times.items()}
    counts = np.bincount(reference, minlength=8).tolist()
    per = {name: value / args.images * 1e6 for name, value in median.items()}
    print(
        f"create_aspect_ratio_groups(k=3) over {args.images} images, one thread, median of "
        f"{args.rounds} rounds; group sizes {counts}"
    )
    print(
        f"  headers (InstanceMaskDataset.get_height_and_width): {median['headers']:.3f} s "
        f"({per['headers']:.1f} us/image)"
    )
    print(
        f"  fallback (load every sample: decode image + mask, derive target): "
        f"{median['fallback']:.3f} s ({per['fallback']:.1f} us/image)"
    )
    print(
        f"  coco json metadata (CocoJsonDataset, already parsed): {median['coco']:.4f} s "
        f"({per['coco']:.2f} us/image)"
    )
    print(f"ratio fallback / headers: {median['fallback'] / median['headers']:.1f}x")


if __name__ == "__main__":
    main()
