"""The training engine: train and evaluate loops, metric logging, checkpoints.

What torchvision's reference ``engine.py`` and ``utils.py`` do, as a library: import the
functions instead of copying the scripts. A complete loop::

    for epoch in range(start_epoch, num_epochs):
        train_one_epoch(model, optimizer, train_loader, device, epoch,
                        lr_scheduler=scheduler, lr_scheduler_interval="epoch")
        save_checkpoint("last.pt", model=model, optimizer=optimizer,
                        lr_scheduler=scheduler, epoch=epoch, config=vars(args))
        metrics = evaluate(model, val_loader, device)

See the training guide for resuming, mixed precision and multi-GPU training.
"""

from detkit.engine.checkpoint import load_checkpoint, save_checkpoint
from detkit.engine.errors import NonFiniteLossError
from detkit.engine.evaluate import Evaluator, evaluate, infer_iou_types
from detkit.engine.keeper import CheckpointKeeper
from detkit.engine.logger import MetricLogger, SmoothedValue
from detkit.engine.rng import get_rng_state, set_rng_state
from detkit.engine.train import move_to_device, train_one_epoch, warmup_factor_at

__all__ = [
    "CheckpointKeeper",
    "Evaluator",
    "MetricLogger",
    "NonFiniteLossError",
    "SmoothedValue",
    "evaluate",
    "get_rng_state",
    "infer_iou_types",
    "load_checkpoint",
    "move_to_device",
    "save_checkpoint",
    "set_rng_state",
    "train_one_epoch",
    "warmup_factor_at",
]
