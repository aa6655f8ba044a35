"""Datasets, transforms, samplers and collation for detection data.

Everything here returns samples in the target contract of :mod:`detkit.types`.
"""

from detkit.data.collate import collate_fn
from detkit.data.download import DownloadError, download_file, extract_zip
from detkit.data.instance_mask import InstanceMaskDataset
from detkit.data.synthetic import write_synthetic_pennfudan

__all__ = [
    "DownloadError",
    "InstanceMaskDataset",
    "collate_fn",
    "download_file",
    "extract_zip",
    "write_synthetic_pennfudan",
]
