"""Draw the pictures of the "Pictures" guide with detkit.visualize itself.

* ``pictures_predictions.png``: synthetic shapes of three classes (triangle, box, kite;
  ``write_synthetic_coco``), each image's ground truth drawn with ``draw_prediction`` as
  if it were a model's output, with made-up scores. It illustrates the drawing (class
  colours, caption tabs), not a model. Top row: the defaults; bottom row: ``colors=`` and
  ``font_size=``.
* ``pictures_audit.png`` and ``docs/_generated/audit_report.txt``: ``detkit.data.audit``
  of 40 synthetic Penn-Fudan-layout images, one of whose masks was replaced by a smaller
  one (a size mismatch the audit must name), against the anchors of torchvision's Mask
  R-CNN, drawn by ``plot_audit``.
* ``pictures_curves.png``: ``plot_training_curves`` of the offline demo's
  ``metrics.json`` (``examples/pennfudan/train.py --demo``), whose per-epoch records are
  kept in ``docs/_generated/demo_history.json``.

Run from the repository root (seconds, offline)::

    python docs/guides/make_pictures.py

``--metrics runs/demo/metrics.json`` first refreshes ``demo_history.json`` from a new run
(``docs/make_tutorial_assets.py`` refreshes it too). The PNGs are reduced to 128 colours
so that the docs stay small.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import textwrap
from pathlib import Path

import torch
from PIL import Image

from detkit.data import (
    CocoJsonDataset,
    InstanceMaskDataset,
    audit,
    write_synthetic_coco,
    write_synthetic_pennfudan,
)
from detkit.visualize import draw_prediction, make_grid, plot_audit, plot_training_curves

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "docs" / "guides" / "_images"
HISTORY = ROOT / "docs" / "_generated" / "demo_history.json"
AUDIT_REPORT = ROOT / "docs" / "_generated" / "audit_report.txt"


def small_png(picture: torch.Tensor | Image.Image, path: Path) -> None:
    """Save with 128 colours: a third of the bytes, no visible change at this size."""
    if isinstance(picture, torch.Tensor):
        picture = Image.fromarray(picture.permute(1, 2, 0).numpy())
    picture = picture.convert("RGB").quantize(128, dither=Image.Dither.NONE)
    picture.save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


def prediction_picture(work: Path) -> None:
    root = write_synthetic_coco(
        work / "shapes",
        3,
        seed=0,
        size_range=(180, 220),
        max_instances=4,
        negative_fraction=0.0,
        crowd_fraction=0.0,
        num_keypoints=0,
    )
    dataset = CocoJsonDataset(root / "images", root / "annotations.json")
    generator = torch.Generator().manual_seed(0)
    rows: list[list[torch.Tensor]] = [[], []]
    for index in range(len(dataset)):
        image, target = dataset[index]
        scores = torch.rand(len(target["boxes"]), generator=generator) * 0.45 + 0.54
        order = scores.argsort(descending=True)  # as a model sorts its detections
        prediction = {
            "boxes": target["boxes"][order],
            "labels": target["labels"][order],
            "scores": scores[order],
            "masks": target["masks"][order, None].float(),
        }
        names = dataset.class_names
        rows[0].append(draw_prediction(image, prediction, label_names=names))
        rows[1].append(
            draw_prediction(
                image,
                prediction,
                label_names=names,
                colors={1: "navy", 2: "gold", 3: "darkred"},
                font_size=16,
            )
        )
    grid = make_grid(rows[0] + rows[1], ncols=len(rows[0]))
    small_png(grid, IMAGES / "pictures_predictions.png")


def audit_picture(work: Path) -> None:
    root = write_synthetic_pennfudan(work / "pedestrians", 40, seed=0, size_range=(250, 600))
    images = sorted((root / "PNGImages").iterdir())
    masks = sorted((root / "PedMasks").iterdir())
    Image.new("L", (32, 32), 1).save(masks[7])  # a mask of the wrong size
    dataset = InstanceMaskDataset(list(zip(map(str, images), map(str, masks))))
    # torchvision's Mask R-CNN: anchors 32..512 px, ratios 0.5, 1, 2, inputs resized to 800.
    report = audit(
        dataset,
        num_classes=2,
        anchor_sizes=[32, 64, 128, 256, 512],
        aspect_ratios=[0.5, 1.0, 2.0],
        min_size=800,
        max_size=1333,
    )
    text = str(report).replace(str(root), "pedestrians")
    # Long lines wrapped for the page (a terminal wraps them by itself).
    lines = [
        textwrap.fill(line, 78, subsequent_indent="      ", break_on_hyphens=False)
        for line in text.splitlines()
    ]
    AUDIT_REPORT.write_text("\n".join(lines) + "\n")
    print(f"wrote {AUDIT_REPORT}")
    plot_audit(report, work / "audit.png")
    small_png(Image.open(work / "audit.png"), IMAGES / "pictures_audit.png")


def save_history(metrics: Path) -> None:
    """Keep a run's per-epoch records (``metrics.json``'s ``epochs``) in ``HISTORY``."""
    epochs = json.loads(metrics.read_text())["epochs"]
    for record in epochs:  # per-class AP would only make the file longer
        for task in ("bbox", "segm", "keypoints"):
            record.get(task, {}).pop("per_class_AP", None)
    HISTORY.write_text(json.dumps(epochs, indent=1) + "\n")


def curves_picture() -> None:
    history = json.loads(HISTORY.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        plot_training_curves(history, Path(tmp) / "curves.png")
        small_png(Image.open(Path(tmp) / "curves.png"), IMAGES / "pictures_curves.png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", type=Path, help="a run's metrics.json to plot")
    args = parser.parse_args(argv)
    if args.metrics is not None:
        save_history(args.metrics)
    IMAGES.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prediction_picture(Path(tmp))
        audit_picture(Path(tmp))
    curves_picture()


if __name__ == "__main__":
    main()
