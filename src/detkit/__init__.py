"""detkit: building blocks for fine-tuning torchvision detection models on your own data.

Subpackages: :mod:`detkit.types` (the target contract), :mod:`detkit.ops`, :mod:`detkit.data`
(datasets, :mod:`~detkit.data.transforms`, samplers), :mod:`detkit.models`,
:mod:`detkit.evaluation`, :mod:`detkit.engine`, :mod:`detkit.distributed` and
:mod:`detkit.visualize`. The names used in most training scripts are re-exported here.

The engine prints its progress lines and the evaluation summary even when the application
configured no :mod:`logging`; ``detkit.set_verbosity(logging.WARNING)`` silences them (see
:mod:`detkit.console`).

>>> import detkit
>>> detkit.__version__
'0.1.0'
"""

from detkit.console import set_verbosity
from detkit.data import (
    CocoJsonDataset,
    GroupedBatchSampler,
    InferenceSampler,
    InstanceMaskDataset,
    collate_fn,
    create_aspect_ratio_groups,
    write_synthetic_pennfudan,
)
from detkit.engine import (
    NonFiniteLossError,
    evaluate,
    load_checkpoint,
    save_checkpoint,
    train_one_epoch,
)
from detkit.evaluation import CocoEvaluator
from detkit.models import (
    detection_model,
    fasterrcnn,
    fpn_backbone,
    keypointrcnn,
    maskrcnn,
    replace_heads,
    trunk_backbone,
)
from detkit.types import Prediction, Target, validate_target

__version__ = "0.1.0"

__all__ = [
    "CocoEvaluator",
    "CocoJsonDataset",
    "GroupedBatchSampler",
    "InferenceSampler",
    "InstanceMaskDataset",
    "NonFiniteLossError",
    "Prediction",
    "Target",
    "__version__",
    "collate_fn",
    "create_aspect_ratio_groups",
    "detection_model",
    "evaluate",
    "fasterrcnn",
    "fpn_backbone",
    "keypointrcnn",
    "load_checkpoint",
    "maskrcnn",
    "replace_heads",
    "save_checkpoint",
    "set_verbosity",
    "train_one_epoch",
    "trunk_backbone",
    "validate_target",
    "write_synthetic_pennfudan",
]
