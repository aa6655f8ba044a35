"""What train.py writes besides checkpoints: metrics, curves, pictures, the best epoch's
operating points and analysis plots, the dataset audit."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from common import CLASS_NAMES
from torch.utils.data import Dataset, Subset

from detkit.data import AuditReport, audit
from detkit.distributed import is_main_process
from detkit.engine import CheckpointKeeper
from detkit.evaluation import CocoEvaluator
from detkit.files import write_json
from detkit.visualize import (
    draw_prediction,
    make_grid,
    plot_audit,
    plot_confusion_matrix,
    plot_pr_curves,
    plot_training_curves,
    save_image,
)

logger = logging.getLogger("pennfudan")

PLOT_EXTRA = 'pip install "torch-detkit[plot]"'


def can_plot() -> bool:
    """Whether matplotlib, an optional extra, is installed (checked without importing it)."""
    return importlib.util.find_spec("matplotlib") is not None


class TrainingCurves:
    """Draws ``curves.png`` (losses, learning rate, AP per epoch) after each epoch.

    Without matplotlib the run goes on without the picture, and says so once.

    Args:
        path: the picture's file, written atomically (a viewer never sees half of it).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.available = can_plot()
        self._told = False

    def write(self, history: Sequence[dict[str, Any]]) -> Path | None:
        """Draw the curves of ``history`` (metrics.json's epochs); the path, or ``None``."""
        if not self.available:
            if not self._told:
                logger.info(
                    "%s not drawn: matplotlib is not installed (%s)", self.path.name, PLOT_EXTRA
                )
                self._told = True
            return None
        plot_training_curves(history, self.path)
        return self.path


class AnalysisPlots:
    """Draws ``pr_curves.png`` and ``confusion.png`` (boxes) of the best epoch so far.

    The precision-recall curve of each class with its F1-best score threshold marked, and
    the confusion matrix (background included) of the detections kept at those thresholds:
    what ``operating_points.json`` gives ``predict.py --thresholds``. Without matplotlib
    nothing is drawn, and the run says so once.

    Args:
        output_dir: where the pictures go (written atomically).
    """

    def __init__(self, output_dir: Path) -> None:
        self.pr_curves = output_dir / "pr_curves.png"
        self.confusion = output_dir / "confusion.png"
        self.available = can_plot()
        self._told = False

    def write(self, points: Any, matrix: Any) -> bool:
        """Draw ``points`` (:class:`~detkit.evaluation.OperatingPoints`) and ``matrix``
        (:class:`~detkit.evaluation.ConfusionMatrix`); whether they were drawn."""
        if not self.available:
            if not self._told:
                logger.info(
                    "%s and %s not drawn: matplotlib is not installed (%s)",
                    self.pr_curves.name,
                    self.confusion.name,
                    PLOT_EXTRA,
                )
                self._told = True
            return False
        names = dict(enumerate(CLASS_NAMES))
        plot_pr_curves(points, self.pr_curves, class_names=names)
        plot_confusion_matrix(matrix, self.confusion, class_names=names)
        return True


class NamedSubset(Subset):
    """A ``Subset`` that still names its samples' image files, and the class names.

    :func:`detkit.data.audit` names each bad sample's file through ``image_path``, which a
    plain ``Subset`` hides.
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int], class_names: list[str]) -> None:
        super().__init__(dataset, indices)
        self.class_names = class_names

    def image_path(self, idx: int) -> Path:
        return self.dataset.image_path(self.indices[idx])  # type: ignore[attr-defined]


def audit_splits(
    splits: dict[str, Dataset], model: Any, output_dir: Path
) -> dict[str, AuditReport]:
    """Audit each split against ``model``'s anchors; print the reports, draw the pictures.

    The pictures: ``audit.png`` for the first split (the training images, the ones the
    anchors must fit), ``audit_<split>.png`` for the others.
    """
    reports = {}
    for i, (split, dataset) in enumerate(splits.items()):
        report = reports[split] = audit(dataset, model=model)
        print(f"== {split} split ==\n{report.summary()}\n", flush=True)
        path = output_dir / ("audit.png" if i == 0 else f"audit_{split}.png")
        if can_plot():
            plot_audit(report, path)
            logger.info("audit picture of the %s split: %s", split, path)
        elif i == 0:
            logger.info("audit pictures not drawn: matplotlib is not installed (%s)", PLOT_EXTRA)
    return reports


def draw_pictures(
    model, test_loader, device, output_dir: Path, count: int, threshold: float
) -> Path | None:
    """Predictions on the first ``count`` test images: one PNG each, and a grid of all."""
    if count <= 0:
        return None
    folder = output_dir / "predictions"
    pictures = []
    model.eval()
    with torch.inference_mode():
        for images, targets in test_loader:
            outputs = model([image.to(device) for image in images])
            for image, target, output in zip(images, targets, outputs):
                picture = draw_prediction(
                    image, output, score_threshold=threshold, label_names=CLASS_NAMES
                )
                save_image(picture, folder / f"image_{int(target['image_id']):04d}.png")
                pictures.append(picture)
                if len(pictures) == count:
                    break
            if len(pictures) == count:
                break
    return save_image(make_grid(pictures, ncols=4), output_dir / "predictions.png")


def best_record(keeper: CheckpointKeeper) -> dict[str, Any]:
    """What metrics.json says about the best epoch."""
    return {
        "metric": keeper.metric,
        "mode": keeper.mode,
        "epoch": keeper.best_epoch,
        "value": keeper.best_value,
        "checkpoint": keeper.best_filename,
    }


def with_interval(stats: dict[str, Any], name: str) -> str:
    """``"AP 0.612 [0.571, 0.650]"``: a statistic and its bootstrap interval when it has one."""
    text = f"{name} {stats[name]:.3f}"
    interval = stats.get(f"{name}_interval")
    if interval is not None:
        text += f" [{interval[0]:.3f}, {interval[1]:.3f}]"
    return text


def write_best_analysis(
    evaluator: CocoEvaluator,
    points: Mapping[str, Any],
    record: dict[str, Any],
    output_dir: Path,
    plots: AnalysisPlots,
) -> None:
    """The best epoch so far: ``operating_points.json`` (for ``predict.py --thresholds``),
    ``pr_curves.png`` and ``confusion.png`` (boxes, at their F1-best thresholds).

    Every process calls it (the confusion matrix is collective); the main one writes.
    """
    matrix = None
    if plots.available:
        matrix = evaluator.confusion_matrix("bbox", thresholds=points["bbox"])
    if not is_main_process():
        return
    write_json(
        output_dir / "operating_points.json",
        {"epoch": record["epoch"], "operating_points": record["operating_points"]},
        indent=2,
    )
    plots.write(points["bbox"], matrix)


def log_epoch(
    record: dict[str, Any], keeper: CheckpointKeeper, confidence: float | None = None
) -> None:
    """One line per epoch: AP and AP50 per task (with their intervals), the validation loss
    and the best epoch so far; ``confidence`` names the intervals' level."""
    summary = "  ".join(
        f"{t} {with_interval(record[t], 'AP')} {with_interval(record[t], 'AP50')}"
        for t in ("bbox", "segm", "keypoints")
        if t in record
    )
    if confidence is not None and any(
        isinstance(stats, dict) and "AP_interval" in stats for stats in record.values()
    ):
        summary += f" ({100 * confidence:g}% bootstrap over images)"
    if record.get("val_losses"):
        summary += f"  val loss {record['val_losses']['loss']:.4f}"
    logger.info(
        "epoch %d done in %.0f s: %s (best %s %.4f at epoch %d)",
        record["epoch"],
        record["seconds"],
        summary,
        keeper.metric,
        keeper.best_value if keeper.best_value is not None else float("nan"),
        keeper.best_epoch if keeper.best_epoch is not None else -1,
    )
