"""Datasets, transforms, samplers and collation for detection data.

Everything here returns samples in the target contract of :mod:`detkit.types`. Paired
transforms live in :mod:`detkit.data.transforms` (``from detkit.data import transforms as T``).
"""

from detkit.data import transforms as transforms  # the subpackage, for `detkit.data.transforms`
from detkit.data._image_files import MaxPixels
from detkit.data.auditing import AuditReport, SampleProblem, audit, best_anchor_iou
from detkit.data.coco import CocoJsonDataset
from detkit.data.collate import collate_fn
from detkit.data.download import DownloadError, download_file, extract_zip
from detkit.data.instance_mask import InstanceMaskDataset
from detkit.data.samplers import (
    GroupedBatchSampler,
    InferenceSampler,
    compute_aspect_ratios,
    create_aspect_ratio_groups,
)
from detkit.data.synthetic import write_synthetic_coco, write_synthetic_pennfudan
from detkit.data.transformed import TransformedSamples

__all__ = [
    "AuditReport",
    "CocoJsonDataset",
    "DownloadError",
    "GroupedBatchSampler",
    "InferenceSampler",
    "InstanceMaskDataset",
    "MaxPixels",
    "SampleProblem",
    "TransformedSamples",
    "audit",
    "best_anchor_iou",
    "collate_fn",
    "compute_aspect_ratios",
    "create_aspect_ratio_groups",
    "download_file",
    "extract_zip",
    "write_synthetic_coco",
    "write_synthetic_pennfudan",
]
