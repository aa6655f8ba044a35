"""Datasets, transforms, samplers and collation for detection data.

Everything here returns samples in the target contract of :mod:`detkit.types`.
"""

from detkit.data.collate import collate_fn
from detkit.data.instance_mask import InstanceMaskDataset
from detkit.data.synthetic import write_synthetic_pennfudan

__all__ = [
    "InstanceMaskDataset",
    "collate_fn",
    "write_synthetic_pennfudan",
]
