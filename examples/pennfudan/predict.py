"""Run a model trained by train.py on a folder of images: annotated pictures and COCO results.

    python examples/pennfudan/predict.py --checkpoint runs/demo/checkpoint_005.pt \\
        --images runs/demo/data/PNGImages --output-dir runs/demo/predict

Writes one annotated PNG per image, ``results.json`` (COCO results: ``image_id``,
``category_id``, ``bbox`` as XYWH, ``score``, and ``segmentation`` as RLE for Mask R-CNN) and
``images.json`` (the COCO ``images`` list: which file each ``image_id`` is).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch
from common import CLASS_NAMES, load_trained
from PIL import Image

from detkit.engine import infer_iou_types
from detkit.evaluation import coco_results
from detkit.visualize import draw_prediction, save_image

logger = logging.getLogger("pennfudan")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint", type=Path, required=True, help="a checkpoint written by train.py"
    )
    parser.add_argument("--images", type=Path, required=True, help="a folder of images")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--score-threshold", type=float, default=0.5, help="for the pictures")
    parser.add_argument("--device", help="cpu, cuda ... (default: cuda when available)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if not args.checkpoint.is_file():
        raise SystemExit(f"--checkpoint: no file '{args.checkpoint}'")
    files = (
        sorted(p for p in args.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if args.images.is_dir()
        else []
    )
    if not files:
        raise SystemExit(
            f"--images: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in '{args.images}'"
        )
    model, _ = load_trained(args.checkpoint, device)
    has_masks = "segm" in infer_iou_types(model)

    images, results = [], []
    with torch.inference_mode():
        for image_id, path in enumerate(files, start=1):
            try:
                with Image.open(path) as opened:
                    pil = opened.convert("RGB")
            except OSError as exc:
                raise SystemExit(f"cannot read image '{path}': {exc}") from None
            image = torch.from_numpy(np.array(pil)).permute(2, 0, 1).float().div(255)
            (prediction,) = model([image.to(device)])
            prediction = {k: v.cpu() for k, v in prediction.items()}
            picture = draw_prediction(
                image, prediction, score_threshold=args.score_threshold, label_names=CLASS_NAMES
            )
            save_image(picture, args.output_dir / f"{path.stem}.png")
            images.append(
                {"id": image_id, "file_name": path.name, "height": pil.height, "width": pil.width}
            )
            rows = coco_results([prediction], [image_id], iou_type="bbox")
            if has_masks:
                for row, segm in zip(rows, coco_results([prediction], [image_id], iou_type="segm")):
                    row["segmentation"] = segm["segmentation"]
            results += rows
    (args.output_dir / "results.json").write_text(json.dumps(results))
    (args.output_dir / "images.json").write_text(json.dumps(images, indent=1))
    logger.info(
        "%d images, %d detections: pictures and results.json in %s",
        len(files),
        len(results),
        args.output_dir,
    )
    return results


if __name__ == "__main__":
    main()
