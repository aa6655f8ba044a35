"""Auditing a dataset before training: every bad sample at once, and the statistics to look at.

torchvision users meet *"All bounding boxes should have positive height and width"* in the
middle of an epoch without knowing which of 3,000 files is at fault. :func:`audit` reads
every sample once and reports all the problems together, each with its file and
``image_id``, plus what people look at before training: instances per class, images without
instances, and box sizes and aspect ratios against the model's anchors.

>>> import tempfile
>>> from detkit.data import CocoJsonDataset, write_synthetic_coco
>>> root = write_synthetic_coco(tempfile.mkdtemp(), num_images=6, seed=0)
>>> report = audit(CocoJsonDataset(root / "images", root / "annotations.json"))
>>> report.ok, report.num_samples
(True, 6)
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detkit.data._image_headers import png_problem
from detkit.tv_tensors import plain
from detkit.types import image_size, normalize_image_id, sample_name, target_problems

__all__ = ["AuditReport", "SampleProblem", "audit", "best_anchor_iou"]


@dataclass(frozen=True)
class SampleProblem:
    """One problem of one sample: where it is and what is wrong.

    >>> print(SampleProblem(3, 17, "images/17.png", "boxes", "box 0 is flat"))
    sample image_id=17 ('images/17.png') (index 3): field 'boxes': box 0 is flat
    """

    index: int
    image_id: Any
    source: str | None
    field: str
    message: str

    def __str__(self) -> str:
        if self.message.startswith("sample "):  # a dataset's error that names the sample
            return f"index {self.index}: {self.message}"
        where = sample_name(image_id=self.image_id, source=self.source)
        return f"{where} (index {self.index}): field '{self.field}': {self.message}"


@dataclass
class AuditReport:
    """What :func:`audit` found; ``str(report)`` is the text report.

    Attributes:
        num_samples: samples read.
        problems: samples that break the contract (training would fail or learn garbage).
        warnings: legal but suspicious instances (an empty mask beside a box, a box smaller
            than one pixel a side, ...).
        instances_per_class: ``{label: count}`` over all samples (crowd regions included).
        class_names: names of the labels, when the dataset has them (``class_names``).
        images_without_instances: samples with ``N = 0`` (negative samples).
        box_sizes: float ``[M, 2]`` array of every valid box's width and height, in the
            model's input pixels when a resize was known (else the images' pixels).
        scale_note: how ``box_sizes`` were scaled.
        anchor_sizes: the model's anchor sizes, if known.
        aspect_ratios: the model's anchor aspect ratios (height / width), if known.

    >>> sizes = np.array([[10.0, 20.0], [30.0, 30.0], [5.0, 5.0]])
    >>> report = AuditReport(
    ...     num_samples=2, instances_per_class={1: 3}, box_sizes=sizes
    ... )
    >>> report.ok
    True
    >>> print(report.summary().splitlines()[-1])
    box aspect ratio h / w: 5% 1.00, median 1.00, 95% 1.90
    """

    num_samples: int
    problems: list[SampleProblem] = field(default_factory=list)
    warnings: list[SampleProblem] = field(default_factory=list)
    instances_per_class: dict[int, int] = field(default_factory=dict)
    class_names: list[str] | None = None
    images_without_instances: int = 0
    box_sizes: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    scale_note: str = "image pixels"
    anchor_sizes: tuple[float, ...] | None = None
    aspect_ratios: tuple[float, ...] | None = None

    @property
    def ok(self) -> bool:
        """Whether no sample breaks the contract."""
        return not self.problems

    def anchor_coverage(self, threshold: float = 0.5) -> float | None:
        """Fraction of boxes whose best anchor, centred on them, overlaps with IoU >= threshold.

        The usual "best possible recall" of an anchor set: a box no anchor shape matches is
        hard to learn. ``None`` without anchors or boxes.
        """
        if not self.anchor_sizes or not self.aspect_ratios or not len(self.box_sizes):
            return None
        return float(
            (
                best_anchor_iou(self.box_sizes, self.anchor_sizes, self.aspect_ratios) >= threshold
            ).mean()
        )

    def summary(self, *, max_problems: int = 20) -> str:
        """The text report: problems first, then the statistics."""
        lines = [f"Dataset audit: {self.num_samples} samples"]
        if self.problems:
            lines.append(
                f"{len(self.problems)} problem(s) in {len({p.index for p in self.problems})} sample(s):"
            )
            lines += [f"  {p}" for p in self.problems[:max_problems]]
            if len(self.problems) > max_problems:
                lines.append(f"  ... and {len(self.problems) - max_problems} more")
        else:
            lines.append("no problems: every sample follows the target contract")
        if self.warnings:
            lines.append(f"{len(self.warnings)} warning(s):")
            lines += [f"  {p}" for p in self.warnings[:max_problems]]
            if len(self.warnings) > max_problems:
                lines.append(f"  ... and {len(self.warnings) - max_problems} more")
        lines.append(f"images without instances: {self.images_without_instances}")
        lines.append("instances per class:")
        for label, count in sorted(self.instances_per_class.items()):
            lines.append(f"  {label:>4} {self._name(label):<20} {count}")
        if len(self.box_sizes):
            sides = np.sqrt(self.box_sizes.prod(axis=1))
            ratios = self.box_sizes[:, 1] / self.box_sizes[:, 0]
            q = np.percentile
            lines.append(
                f"box size sqrt(w * h) in {self.scale_note}: min {sides.min():.1f}, "
                f"5% {q(sides, 5):.1f}, median {q(sides, 50):.1f}, 95% {q(sides, 95):.1f}, "
                f"max {sides.max():.1f}"
            )
            lines.append(
                f"box aspect ratio h / w: 5% {q(ratios, 5):.2f}, median {q(ratios, 50):.2f}, "
                f"95% {q(ratios, 95):.2f}"
            )
        if self.anchor_sizes and self.aspect_ratios:
            sizes = ", ".join(f"{s:g}" for s in self.anchor_sizes)
            ratios_text = ", ".join(f"{r:g}" for r in self.aspect_ratios)
            lines.append(f"anchors: sizes {sizes}; aspect ratios {ratios_text}")
            for threshold in (0.5, 0.7):
                coverage = self.anchor_coverage(threshold)
                if coverage is not None:
                    lines.append(
                        f"  boxes with an anchor of IoU >= {threshold}: {100 * coverage:.1f}%"
                    )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def _name(self, label: int) -> str:
        if self.class_names and 0 <= label < len(self.class_names):
            return str(self.class_names[label])
        return ""


def best_anchor_iou(
    box_sizes: np.ndarray, anchor_sizes: Sequence[float], aspect_ratios: Sequence[float]
) -> np.ndarray:
    """For boxes ``[M, 2]`` (width, height), the best IoU with any anchor centred on them.

    Anchors follow torchvision's ``AnchorGenerator``: size ``s`` and ratio ``r`` (height /
    width) give width ``s / sqrt(r)`` and height ``s * sqrt(r)``.

    >>> boxes = np.array([[32.0, 32.0], [10.0, 40.0]])
    >>> best_anchor_iou(boxes, [32], [1.0]).round(3).tolist()
    [1.0, 0.29]
    """
    sizes = np.asarray(anchor_sizes, dtype=np.float64)[:, None]
    ratios = np.sqrt(np.asarray(aspect_ratios, dtype=np.float64))[None, :]
    anchors_w = (sizes / ratios).ravel()
    anchors_h = (sizes * ratios).ravel()
    w, h = box_sizes[:, :1].astype(np.float64), box_sizes[:, 1:].astype(np.float64)
    inter = np.minimum(w, anchors_w) * np.minimum(h, anchors_h)
    union = w * h + anchors_w * anchors_h - inter
    return (inter / union).max(axis=1)


def _model_settings(model: Any) -> tuple[Any, Any, Any, Any, Any]:
    """``(anchor sizes, aspect ratios, min_size, max_size, num_classes)`` of a torchvision
    detection model, read by attribute (``None`` where the model has no such part)."""
    generator = getattr(getattr(model, "rpn", None), "anchor_generator", None) or getattr(
        model, "anchor_generator", None
    )
    sizes = ratios = None
    if generator is not None and hasattr(generator, "sizes"):
        sizes = tuple(sorted({float(s) for level in generator.sizes for s in level}))
        ratios = tuple(sorted({float(r) for level in generator.aspect_ratios for r in level}))
    transform = getattr(model, "transform", None)
    min_size = getattr(transform, "min_size", None)
    max_size = getattr(transform, "max_size", None)
    predictor = getattr(getattr(model, "roi_heads", None), "box_predictor", None)
    num_classes = getattr(getattr(predictor, "cls_score", None), "out_features", None)
    return sizes, ratios, min_size, max_size, num_classes


def _source(dataset: Any, index: int) -> str | None:
    path = getattr(dataset, "image_path", None)
    if callable(path):
        try:
            return str(path(index))
        except Exception:  # a dataset whose image_path fails: name the index only
            return None
    return None


def _read(dataset: Any, index: int, source: str | None) -> Any:
    """Sample ``index``, or the :class:`SampleProblem` that keeps it from being read.

    PNG files are checked first (``png_problem``): torchvision's decoder crashes the
    process on a corrupt one, which would end the audit without a word on the file.
    """
    for role, method in (("image", "image_path"), ("mask", "mask_path")):
        find = getattr(dataset, method, None)
        try:
            path = find(index) if callable(find) else None
            problem = None if path is None else png_problem(Path(path).read_bytes())
        except Exception:  # unreadable: reading the sample says why, naming it
            continue
        if problem:
            message = (
                f"{role} file '{path}' is a corrupt PNG: {problem}; decoding it would crash the "
                "process (torchvision's PNG decoder, a segmentation fault): replace the file"
            )
            return SampleProblem(index, None, source, "file", message)
    try:
        return dataset[index]
    except Exception as exc:  # none stops the audit
        named = str(exc).startswith("sample ")  # detkit's datasets name file and image_id
        message = str(exc) if named else f"{type(exc).__name__}: {exc}"
        return SampleProblem(index, None, source, "file", message)


def audit(
    dataset: Any,
    *,
    model: Any = None,
    num_classes: int | None = None,
    anchor_sizes: Sequence[float] | None = None,
    aspect_ratios: Sequence[float] | None = None,
    min_size: int | Sequence[int] | None = None,
    max_size: int | None = None,
) -> AuditReport:
    """Read every sample once and report every problem and the statistics to look at.

    Args:
        dataset: a map-style dataset of ``(image, target)`` samples (any transforms it has
            run as they will in training; audit without random augmentation to see the
            files themselves).
        model: a torchvision detection model: its anchors, input resize (``min_size``,
            ``max_size``) and ``num_classes`` are read from it when not given.
        num_classes: labels must be below it.
        anchor_sizes: anchor sizes (torchvision's ``AnchorGenerator.sizes``, flattened).
        aspect_ratios: anchor aspect ratios (height / width).
        min_size: the model's input resize (shorter side); box sizes are then reported in
            the model's input pixels, as its anchors see them.
        max_size: the longer side's cap of that resize.

    Returns:
        an :class:`AuditReport`; an unreadable sample is a problem of field ``"file"``
        (naming the error), never an exception. A corrupt PNG image or mask (see
        ``image_path`` and ``mask_path``) is reported without being decoded: torchvision's
        decoder would crash the process on it.

    >>> import tempfile
    >>> from detkit.data import InstanceMaskDataset, write_synthetic_pennfudan
    >>> root = write_synthetic_pennfudan(tempfile.mkdtemp(), num_images=3, seed=0)
    >>> pairs = [(p, root / "PedMasks" / f"{p.stem}_mask.png")
    ...          for p in sorted((root / "PNGImages").glob("*.png"))]
    >>> report = audit(InstanceMaskDataset(pairs), anchor_sizes=[32, 64, 128],
    ...                aspect_ratios=[0.5, 1.0, 2.0])
    >>> print(report.summary().splitlines()[1])
    no problems: every sample follows the target contract
    """
    if model is not None:
        found = _model_settings(model)
        anchor_sizes = anchor_sizes or found[0]
        aspect_ratios = aspect_ratios or found[1]
        min_size = min_size if min_size is not None else found[2]
        max_size = max_size if max_size is not None else found[3]
        num_classes = num_classes if num_classes is not None else found[4]
    if isinstance(min_size, Sequence):
        min_size = min_size[-1]  # the evaluation size; training picks among them
    report = AuditReport(
        num_samples=len(dataset),
        class_names=getattr(dataset, "class_names", None),
        anchor_sizes=tuple(float(s) for s in anchor_sizes) if anchor_sizes else None,
        aspect_ratios=tuple(float(r) for r in aspect_ratios) if aspect_ratios else None,
        scale_note="image pixels"
        if min_size is None
        else f"model input pixels (min_size {min_size})",
    )
    labels: Counter[int] = Counter()
    sizes = []
    for index in range(len(dataset)):
        source = _source(dataset, index)
        sample = _read(dataset, index, source)
        if isinstance(sample, SampleProblem):  # every unreadable sample is reported
            report.problems.append(sample)
            continue
        image, target = sample
        image_id = target.get("image_id") if isinstance(target, dict) else None
        with contextlib.suppress(TypeError):
            image_id = None if image_id is None else normalize_image_id(image_id)
        problems = target_problems(image, target, num_classes=num_classes)
        report.problems += [SampleProblem(index, image_id, source, *p) for p in problems]
        if problems:
            continue
        boxes = plain(target["boxes"]).detach().float().cpu()
        if boxes.shape[0] == 0:
            report.images_without_instances += 1
            continue
        labels.update(plain(target["labels"]).tolist())
        widths, heights = (boxes[:, 2] - boxes[:, 0]).numpy(), (boxes[:, 3] - boxes[:, 1]).numpy()
        for i in np.flatnonzero((widths < 1) | (heights < 1)).tolist():
            report.warnings.append(
                SampleProblem(
                    index,
                    image_id,
                    source,
                    "boxes",
                    f"box {i} {boxes[i].tolist()} is under one pixel wide or high",
                )
            )
        masks = target.get("masks")
        if masks is not None:
            empty = plain(masks).flatten(1).amax(dim=1) == 0
            for i in empty.nonzero().flatten().tolist():
                report.warnings.append(
                    SampleProblem(
                        index,
                        image_id,
                        source,
                        "masks",
                        f"instance {i} has a box but an empty mask",
                    )
                )
        scale = 1.0
        if min_size is not None:
            height, width = image_size(image)
            scale = min_size / min(height, width)
            if max_size is not None:
                scale = min(scale, max_size / max(height, width))
        sizes.append(np.stack([widths, heights], axis=1) * scale)
    report.instances_per_class = dict(sorted(labels.items()))
    if sizes:
        report.box_sizes = np.concatenate(sizes)
    return report
