"""The evaluation's parameters: pycocotools' defaults, and the evaluator's options
validated into one :class:`EvalParams` per iou type."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detkit.types import normalize_image_id

IOU_TYPES = ("bbox", "segm", "keypoints")

#: pycocotools' default OKS sigmas, for the 17 COCO person keypoints.
COCO_KEYPOINT_SIGMAS = (
    np.array(
        [
            0.26,
            0.25,
            0.25,
            0.35,
            0.35,
            0.79,
            0.79,
            0.72,
            0.72,
            0.62,
            0.62,
            1.07,
            1.07,
            0.87,
            0.87,
            0.89,
            0.89,
        ]
    )
    / 10.0
)

#: pycocotools' defaults, built the way it builds them (linspace, not arange).
DEFAULT_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10, endpoint=True)
DEFAULT_AREA_RANGES = {
    "bbox": {
        "all": (0.0, 1e10),
        "small": (0.0, 1024.0),
        "medium": (1024.0, 9216.0),
        "large": (9216.0, 1e10),
    },
    "keypoints": {"all": (0.0, 1e10), "medium": (1024.0, 9216.0), "large": (9216.0, 1e10)},
}
DEFAULT_AREA_RANGES["segm"] = DEFAULT_AREA_RANGES["bbox"]
DEFAULT_MAX_DETS = {"bbox": (1, 10, 100), "segm": (1, 10, 100), "keypoints": (20,)}


@dataclass
class EvalParams:
    """Evaluation parameters of one iou type (pycocotools' ``Params``, validated)."""

    iou_type: str
    iou_thresholds: np.ndarray
    max_dets: list[int]
    area_labels: list[str]
    area_ranges: list[list[float]]
    keypoint_sigmas: np.ndarray | None = None
    category_ids: list[int] = field(default_factory=list)
    image_ids: list[int] = field(default_factory=list)


def iou_types_tuple(iou_types: Any) -> tuple[str, ...]:
    if isinstance(iou_types, str):
        iou_types = (iou_types,)
    if not isinstance(iou_types, Sequence) or not iou_types:
        raise ValueError(
            f"iou_types must be a non-empty sequence of {IOU_TYPES}, got {iou_types!r}"
        )
    for iou_type in iou_types:
        if iou_type not in IOU_TYPES:
            raise ValueError(f"iou_types: unknown {iou_type!r}; choose from {IOU_TYPES}")
    if len(set(iou_types)) != len(iou_types):
        raise ValueError(f"iou_types has duplicates: {list(iou_types)}")
    return tuple(iou_types)


def _max_dets(value: Any, iou_type: str) -> list[int]:
    if isinstance(value, Mapping):
        value = value.get(iou_type)
    if value is None:
        return list(DEFAULT_MAX_DETS[iou_type])
    if isinstance(value, numbers.Integral):
        value = [value]
    values = list(value)
    if not values or not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and int(v) > 0 for v in values
    ):
        raise ValueError(f"max_dets must be positive integers, got {value!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"max_dets has duplicates: {values}")
    return sorted(int(v) for v in values)


def _iou_thresholds(value: Any) -> np.ndarray:
    if value is None:
        return DEFAULT_IOU_THRESHOLDS.copy()
    array = np.asarray(
        value.tolist() if hasattr(value, "tolist") else list(value), dtype=np.float64
    ).reshape(-1)
    if array.size == 0 or not np.all((array > 0) & (array <= 1)):
        raise ValueError(f"iou_thresholds must be values in (0, 1], got {value!r}")
    return array


def _area_ranges(value: Any, iou_type: str) -> tuple[list[str], list[list[float]]]:
    ranges = DEFAULT_AREA_RANGES[iou_type] if value is None else value
    if not isinstance(ranges, Mapping) or "all" not in ranges:
        raise ValueError(
            "area_ranges must be a dict {label: (min_area, max_area)} with an 'all' entry, "
            f"got {value!r}"
        )
    labels, bounds = [], []
    for label, bound in ranges.items():
        pair = [float(b) for b in bound]
        if len(pair) != 2 or not pair[0] <= pair[1]:
            raise ValueError(
                f"area_ranges[{label!r}] must be (min, max) with min <= max, got {bound!r}"
            )
        labels.append(str(label))
        bounds.append(pair)
    return labels, bounds


def keypoint_sigmas(value: Any) -> np.ndarray | None:
    if value is None:
        return None
    sigmas = np.asarray(
        value.tolist() if hasattr(value, "tolist") else list(value), dtype=np.float64
    ).reshape(-1)
    if sigmas.size == 0 or not np.all(sigmas > 0):
        raise ValueError(f"kpt_oks_sigmas must be positive numbers, got {value!r}")
    return sigmas


def check_sigmas(sigmas: np.ndarray | None, num_keypoints: int, where: str) -> np.ndarray:
    """The OKS sigmas for ``num_keypoints`` keypoints; COCO's 17 by default."""
    if sigmas is None:
        if num_keypoints != len(COCO_KEYPOINT_SIGMAS):
            raise ValueError(
                f"{where}: instances have {num_keypoints} keypoints, but kpt_oks_sigmas was not "
                "given and COCO's default sigmas describe its 17 person keypoints; pass "
                f"kpt_oks_sigmas=[...] with {num_keypoints} values (each keypoint's OKS "
                "tolerance; COCO uses 0.025 for eyes up to 0.107 for hips)"
            )
        return COCO_KEYPOINT_SIGMAS.copy()
    if len(sigmas) != num_keypoints:
        raise ValueError(
            f"{where}: instances have {num_keypoints} keypoints but kpt_oks_sigmas has "
            f"{len(sigmas)} values"
        )
    return sigmas


def category_list(value: Any) -> list[int] | None:
    if value is None:
        return None
    values = [int(v) for v in value]
    if not values:
        raise ValueError("category_ids must not be empty (use None for every category)")
    return sorted(set(values))


def build_params(
    iou_type: str, *, max_dets: Any, iou_thresholds: Any, area_ranges: Any
) -> EvalParams:
    labels, bounds = _area_ranges(area_ranges, iou_type)
    return EvalParams(
        iou_type=iou_type,
        iou_thresholds=_iou_thresholds(iou_thresholds),
        max_dets=_max_dets(max_dets, iou_type),
        area_labels=labels,
        area_ranges=bounds,
    )


class LabelMap:
    """Maps model labels to dataset category ids (identity without a mapping)."""

    def __init__(self, mapping: Mapping[Any, Any] | None):
        self.mapping = None
        self._lut = None
        self.warned_zero = False  # ground-truth label 0 without a mapping was logged
        if mapping is None:
            return
        if not isinstance(mapping, Mapping):
            raise TypeError(
                f"label_to_category must be a dict {{label: category_id}}, got {type(mapping).__name__}"
            )
        pairs = {}
        for key, value in mapping.items():
            label = normalize_image_id(key, argument="label_to_category key")
            category = normalize_image_id(value, argument=f"label_to_category[{label}]")
            if label < 0 or category < 0:
                raise ValueError(
                    f"label_to_category must map non-negative labels to non-negative category "
                    f"ids, got {label} -> {category}"
                )
            pairs[label] = category
        self.mapping = pairs
        if pairs and max(pairs) < (1 << 20):
            self._lut = np.full(max(pairs) + 1, -1, dtype=np.int64)
            self._lut[list(pairs)] = list(pairs.values())

    def __call__(self, labels: np.ndarray, where: str) -> np.ndarray:
        labels = labels.astype(np.int64, copy=False)
        if self.mapping is None:
            if labels.size and labels.min() < 0:
                raise ValueError(f"{where}: labels must be non-negative, got {labels.min()}")
            return labels
        if self._lut is not None:
            inside = (labels >= 0) & (labels < len(self._lut))
            mapped = np.where(inside, self._lut[np.where(inside, labels, 0)], -1)
        else:
            mapped = np.array([self.mapping.get(v, -1) for v in labels.tolist()], dtype=np.int64)
        if (mapped < 0).any():
            missing = sorted(set(labels[mapped < 0].tolist()))
            raise ValueError(
                f"{where}: labels {missing} are not in label_to_category "
                f"(which maps {sorted(self.mapping)})"
            )
        return mapped
