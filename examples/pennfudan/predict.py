"""Run a model trained by train.py on images: annotated pictures and COCO results.

    python examples/pennfudan/predict.py --checkpoint runs/demo/checkpoint_005.pt \\
        --images runs/demo/data/PNGImages --output-dir runs/demo/predict

``--images`` takes folders and image files. Writes one annotated PNG per image (``<stem>.png``;
``<stem>_<image_id>.png`` when two inputs share a stem, or to spare an input image in the output
folder), ``results.json`` (COCO results: ``image_id``, ``category_id``, ``bbox`` as XYWH,
``score``, and ``segmentation`` as RLE for Mask R-CNN) and ``images.json`` (the COCO ``images``
list: which file each ``image_id`` is, and its ``picture``). A file that cannot be read as an image (not an image, damaged, a folder,
more pixels than PIL's decompression-bomb limit) is skipped with a one-line message; the others
are processed and written.

``--thresholds FILE`` draws each class's detections from its own score threshold instead of the
single ``--score-threshold`` (which still serves classes the file leaves out): a json of
``CocoEvaluator.operating_points(...).to_dict()`` (``{"classes": {"1": {"threshold": 0.62,
...}}}``), that under an ``"operating_points"`` key (as train.py's ``metrics.json`` may hold it,
per iou type), or a plain ``{"1": 0.62}``. Keys are category ids (the model's labels here).
``results.json`` keeps every detection either way, for evaluation.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from common import (
    CLASS_NAMES,
    ArgumentParser,
    UserError,
    check_output_dir,
    one_line,
    run_cli,
    score_threshold,
)
from detectors import load_trained
from PIL import Image

from detkit.engine import infer_iou_types
from detkit.evaluation import coco_results
from detkit.files import write_json
from detkit.visualize import draw_prediction, save_image

logger = logging.getLogger("pennfudan")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint", type=Path, required=True, help="a checkpoint written by train.py"
    )
    parser.add_argument(
        "--images", type=Path, nargs="+", required=True, help="image files and folders of images"
    )
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument(
        "--score-threshold", type=score_threshold, default=0.5, help="for the pictures (0..1)"
    )
    parser.add_argument(
        "--thresholds",
        type=Path,
        help="json of per-class score thresholds (operating points) for the pictures",
    )
    parser.add_argument("--device", help="cpu, cuda ... (default: cuda when available)")
    return parser.parse_args(argv)


def read_thresholds(path: Path) -> dict[int, float]:
    """``{category_id: score threshold}`` from a json of operating points (see the module
    docstring); classes whose threshold is null are left out.

    Raises:
        UserError: naming the file, when it cannot be read or holds no thresholds.
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"--thresholds: cannot read '{path}': {one_line(error)}") from error
    if isinstance(data, dict) and "operating_points" in data:
        data = data["operating_points"]
        if isinstance(data, dict) and "classes" not in data:  # per iou type: boxes first
            data = data.get("bbox", next(iter(data.values()), None))
    if isinstance(data, dict) and "classes" in data:
        data = {key: (value or {}).get("threshold") for key, value in data["classes"].items()}
    thresholds = {}
    try:
        for key, value in data.items():
            if value is not None:
                thresholds[int(key)] = float(value)
    except (AttributeError, TypeError, ValueError) as error:
        raise UserError(
            f"--thresholds: '{path}' is not a json of per-class thresholds "
            f'(e.g. {{"classes": {{"1": {{"threshold": 0.6}}}}}} or {{"1": 0.6}}): '
            f"{one_line(error)}"
        ) from error
    for label, value in thresholds.items():
        if not 0 <= value <= 1:  # NaN too
            raise UserError(
                f"--thresholds: '{path}' gives class {label} the threshold {value}: scores, "
                "and so thresholds, lie in 0..1"
            )
    return thresholds


def keep_above(prediction: dict, thresholds: dict[int, float], default: float) -> dict:
    """The detections scoring at least their class's threshold (``default`` for others)."""
    labels = prediction["labels"].tolist()
    needed = torch.tensor([thresholds.get(label, default) for label in labels])
    keep = prediction["scores"] >= needed.to(prediction["scores"].dtype)
    return {key: value[keep] for key, value in prediction.items()}


def list_images(inputs: list[Path]) -> list[Path]:
    """The image files of ``inputs``: folders give their files with an image suffix."""
    files: list[Path] = []
    for entry in inputs:
        if entry.is_dir():
            found = sorted(p for p in entry.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                logger.warning(
                    "no image files (%s) in '%s'", ", ".join(sorted(IMAGE_SUFFIXES)), entry
                )
            files += found
        else:
            files.append(entry)  # a missing file is reported, and skipped, when it is read
    if not files:
        raise UserError(f"--images: no image files in {', '.join(map(str, inputs))}")
    return files


def picture_names(files: list[Path], output_dir: Path) -> list[str]:
    """The annotated picture's file name for each input: ``<stem>.png``, or
    ``<stem>_<image_id>.png`` where that name is taken already (``a.png`` and ``a.jpg``, the
    same name in two folders) or is an input image in ``output_dir`` (never drawn over)."""
    folder = output_dir.resolve()
    taken = {path.name.lower() for path in files if path.resolve().parent == folder}
    names = []
    for image_id, path in enumerate(files, start=1):
        name = f"{path.stem}.png"
        while name.lower() in taken:
            name = f"{path.stem}_{image_id}.png" if name == f"{path.stem}.png" else f"_{name}"
        taken.add(name.lower())
        names.append(name)
    return names


def read_image(path: Path) -> Image.Image:
    """``path`` decoded as RGB, refusing more pixels than PIL's limit before decoding them.

    Raises:
        ValueError: for a folder, an image above ``PIL.Image.MAX_IMAGE_PIXELS``, or one of
            more than 8 bits a channel (16-bit PNGs), which RGB would clip.
        OSError: for a missing, unreadable or damaged file, or one that is not an image.
    """
    if path.is_dir():
        raise ValueError("it is a directory, not an image file")
    limit = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        # Above the limit PIL only warns (up to twice it): refuse here instead, from the header.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            opened = Image.open(path)
        except Image.DecompressionBombError as error:
            raise ValueError(str(error)) from error
        with opened:
            pixels = opened.width * opened.height
            if limit is not None and pixels > limit:
                raise ValueError(
                    f"{opened.width}x{opened.height} = {pixels} pixels is more than PIL's limit of "
                    f"{limit} (PIL.Image.MAX_IMAGE_PIXELS): a decompression bomb?"
                )
            if opened.mode.startswith(("I", "F")):  # convert("RGB") would clip it to 0..255
                raise ValueError(
                    f"its pixels are {opened.mode!r} (16- or 32-bit, or float), which RGB would "
                    "clip to 0..255: convert it to an 8-bit image first"
                )
            return opened.convert("RGB")


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.checkpoint.is_dir():
        raise UserError(f"--checkpoint: '{args.checkpoint}' is a directory, not a checkpoint file")
    if not args.checkpoint.is_file():
        raise UserError(f"--checkpoint: no file '{args.checkpoint}'")
    files = list_images(args.images)
    thresholds = None if args.thresholds is None else read_thresholds(args.thresholds)
    check_output_dir(args.output_dir)
    model, _ = load_trained(args.checkpoint, device)
    has_masks = "segm" in infer_iou_types(model)

    images, results, skipped = [], [], []
    pictures = picture_names(files, args.output_dir)
    with torch.inference_mode():
        for image_id, (path, name) in enumerate(zip(files, pictures), start=1):
            try:
                pil = read_image(path)
            except (OSError, ValueError, EOFError) as error:
                logger.warning("skipping '%s': %s", path, one_line(error))
                skipped.append(str(path))
                continue
            image = torch.from_numpy(np.array(pil)).permute(2, 0, 1).float().div(255)
            (prediction,) = model([image.to(device)])
            prediction = {k: v.cpu() for k, v in prediction.items()}
            if thresholds is None:
                picture = draw_prediction(
                    image, prediction, score_threshold=args.score_threshold, label_names=CLASS_NAMES
                )
            else:
                shown = keep_above(prediction, thresholds, args.score_threshold)
                picture = draw_prediction(
                    image, shown, score_threshold=-math.inf, label_names=CLASS_NAMES
                )
            save_image(picture, args.output_dir / name)
            images.append(
                {"id": image_id, "file_name": path.name, "height": pil.height, "width": pil.width,
                 "picture": name}
            )  # fmt: skip
            rows = coco_results([prediction], [image_id], iou_type="bbox")
            if has_masks:
                for row, segm in zip(rows, coco_results([prediction], [image_id], iou_type="segm")):
                    row["segmentation"] = segm["segmentation"]
            results += rows
    write_json(args.output_dir / "results.json", results)
    write_json(args.output_dir / "images.json", images, indent=1)
    logger.info(
        "%d images, %d detections: pictures and results.json in %s%s",
        len(images),
        len(results),
        args.output_dir,
        f" ({len(skipped)} skipped: {', '.join(skipped)})" if skipped else "",
    )
    return results


if __name__ == "__main__":
    sys.exit(run_cli(main))
