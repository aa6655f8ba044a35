"""What a dataset subclass's ``instance_labels`` / ``instance_iscrowd`` return, checked."""

from __future__ import annotations

from typing import Any

import torch


def checked_hook_results(
    where: str, num: int, labels: Any, iscrowd: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(labels, iscrowd)`` as int64 ``Tensor[num]``, or a ``ValueError`` that starts with
    ``where`` (the sample and its mask) and says what is wrong."""
    for name, values in (("instance_labels", labels), ("instance_iscrowd", iscrowd)):
        if not isinstance(values, torch.Tensor) or values.shape != (num,):
            raise ValueError(f"{where}: {name} must return an int64 Tensor[{num}], got {values!r}")
    if labels.is_floating_point() and not torch.equal(labels, labels.round()):
        raise ValueError(
            f"{where}: instance_labels returned {labels.tolist()}; labels are whole numbers"
        )
    if num and int(labels.min()) < 1:
        raise ValueError(
            f"{where}: label {int(labels.min())} is invalid: labels start at 1 (0 is background)"
        )
    if ((iscrowd != 0) & (iscrowd != 1)).any():
        raise ValueError(
            f"{where}: instance_iscrowd returned {iscrowd.tolist()}; crowd flags must be 0 or 1"
        )
    return labels.to(torch.int64), iscrowd.to(torch.int64)
