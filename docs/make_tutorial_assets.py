"""Regenerate the pictures and log excerpts that docs/tutorial.rst shows.

Everything comes from running the code: the dataset on a synthetic Penn-Fudan folder, a
``forward()`` check of the model, and the full offline demo (``train.py --demo``, about five
minutes on a 2-core CPU). Run from the repository root::

    python docs/make_tutorial_assets.py

Writes ``docs/_images/tutorial_*.png`` and ``docs/_generated/*``, then redraws the pictures
of the "Pictures" guide (``docs/guides/make_pictures.py``) with the demo's history.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "pennfudan"))
sys.path.insert(0, str(ROOT / "docs" / "guides"))

import make_pictures  # noqa: E402  (docs/guides/make_pictures.py)
import train  # noqa: E402  (the example's script, importable once its folder is on the path)
from common import train_transforms  # noqa: E402
from dataset import PennFudanDataset  # noqa: E402
from detectors import build_model  # noqa: E402

from detkit.data import collate_fn, write_synthetic_pennfudan  # noqa: E402
from detkit.visualize import draw_target, make_grid  # noqa: E402

IMAGES = ROOT / "docs" / "_images"
GENERATED = ROOT / "docs" / "_generated"


def dataset_assets(root: Path) -> None:
    dataset = PennFudanDataset(root)
    image, target = dataset[0]
    lines = [f"image: {type(image).__name__} {image.dtype} {tuple(image.shape)}"]
    for key, value in target.items():
        lines.append(
            f"{key}: {type(value).__name__} {value.dtype} {tuple(value.shape)}"
            if isinstance(value, torch.Tensor)
            else f"{key}: {value!r}"
        )
    boxes = target["boxes"]
    lines.append(f"boxes: format {boxes.format.name}, canvas_size {boxes.canvas_size}")
    lines += [f"  {box}" for box in boxes.tolist()]
    (GENERATED / "dataset_sample.txt").write_text("\n".join(lines) + "\n")
    pictures = [draw_target(*dataset[i], label_names=["background", "person"]) for i in range(4)]
    make_pictures.small_png(make_grid(pictures, ncols=4), IMAGES / "tutorial_dataset.png")


def forward_assets(root: Path) -> None:
    torch.manual_seed(0)
    dataset = PennFudanDataset(root, transforms=train_transforms())
    images, targets = collate_fn([dataset[0], dataset[1]])
    model = build_model(vars(train.parse_args(["--demo"])))  # the demo's model
    losses = model(list(images), list(targets))  # training mode: a dict of losses
    model.eval()
    with torch.inference_mode():
        (prediction,) = model([images[0]])
    lines = ["# training mode: losses"]
    lines += [f"{name}: {value.item():.4f}" for name, value in losses.items()]
    lines += ["# eval mode: one prediction"]
    lines += [f"{name}: {value.dtype} {tuple(value.shape)}" for name, value in prediction.items()]
    (GENERATED / "forward.txt").write_text("\n".join(lines) + "\n")


def rounded(value: Any, digits: int) -> Any:
    """``value`` with every float rounded, inside dicts and lists (AP intervals) too."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


def demo_assets(work: Path) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    # train.main() reconfigures the root logger: listen on the example's and detkit's loggers.
    loggers = [logging.getLogger("pennfudan"), logging.getLogger("detkit")]
    for logger in loggers:
        logger.addHandler(handler)
    torch.manual_seed(0)
    result = train.main(
        ["--demo", "--output-dir", str(work / "run"), "--data-root", str(work / "data")]
    )
    for logger in loggers:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    epoch0 = [line for line in lines if line.startswith("Epoch: [0]")]
    tables = [i for i, line in enumerate(lines) if line.startswith("IoU metric: bbox")]
    excerpt = [*epoch0[:2], "...", *epoch0[-2:], "..."]
    excerpt += [line for line in lines if line.startswith("epoch ") and "done in" in line]
    excerpt += ["...", *lines[tables[-1] : tables[-1] + 13]]
    (GENERATED / "train_log.txt").write_text("\n".join(excerpt) + "\n")
    last = result["epochs"][-1]
    summary = {
        "epoch": last["epoch"],
        "lr": last["lr"],
        "losses": rounded(last["losses"], 4),
        "val_losses": rounded(last.get("val_losses", {}), 4),
        # per-class AP and operating points would make the excerpt pages long
        "bbox": rounded({k: v for k, v in last["bbox"].items() if k != "per_class_AP"}, 3),
        "segm": rounded({k: v for k, v in last["segm"].items() if k != "per_class_AP"}, 3),
        "best": result.get("best"),
    }
    (GENERATED / "metrics_excerpt.json").write_text(json.dumps(summary, indent=2) + "\n")
    predictions = Image.open(work / "run" / "predictions.png")
    make_pictures.small_png(predictions, IMAGES / "tutorial_predictions.png")
    make_pictures.save_history(work / "run" / "metrics.json")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    IMAGES.mkdir(exist_ok=True)
    GENERATED.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        small = write_synthetic_pennfudan(work / "small", 8, seed=0, size_range=(160, 240))
        dataset_assets(small)
        forward_assets(small)
        demo_assets(work)
    make_pictures.main([])


if __name__ == "__main__":
    main()
