"""detkit: building blocks for fine-tuning torchvision detection models on your own data.

The subpackages are :mod:`detkit.types` (the target contract), :mod:`detkit.ops`,
:mod:`detkit.data`; the most used names are re-exported here.
"""

from detkit.data import InstanceMaskDataset, collate_fn, write_synthetic_pennfudan
from detkit.types import Prediction, Target, validate_target

__version__ = "0.1.0"

__all__ = [
    "InstanceMaskDataset",
    "Prediction",
    "Target",
    "__version__",
    "collate_fn",
    "validate_target",
    "write_synthetic_pennfudan",
]
