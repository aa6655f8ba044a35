"""This process's random generator states as plain data: what makes a resumed run draw the
same numbers as the uninterrupted one.

Part of :mod:`detkit.engine`; import the names from there. :func:`~detkit.engine.save_checkpoint`
stores every process's states and :func:`~detkit.engine.load_checkpoint` restores them.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["get_rng_state", "set_rng_state"]

_log = logging.getLogger(__name__)


def get_rng_state() -> dict[str, Any]:
    """This process's random generator states, as plain data.

    Covers torch's CPU generator, every CUDA device's generator (when CUDA is initialised),
    Python's :mod:`random` and numpy's legacy global generator (``np.random.*``). The data
    loader's shuffling and worker seeds come from torch's generator unless the loader was
    given its own ``generator`` (pass that to :func:`save_checkpoint` as ``generators``).

    >>> state = get_rng_state()
    >>> first = torch.rand(2)
    >>> set_rng_state(state)
    >>> torch.equal(torch.rand(2), first)
    True
    """
    version, keys, gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    cuda = (
        torch.cuda.get_rng_state_all()
        if torch.cuda.is_available() and torch.cuda.is_initialized()
        else []
    )
    return {
        "torch": torch.get_rng_state(),
        "cuda": cuda,
        "python": [version, list(keys), gauss],
        "numpy": {
            "kind": str(np_kind),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore states returned by :func:`get_rng_state` (a missing entry is left alone).

    CUDA states are restored when as many devices are visible as were saved; otherwise a
    warning is logged and the CUDA generators keep their state.

    >>> set_rng_state(get_rng_state())
    """
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda:
        if torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
        else:
            _log.warning(
                "not restoring CUDA random states: %d saved, %d device(s) visible",
                len(cuda),
                torch.cuda.device_count() if torch.cuda.is_available() else 0,
            )
    if "python" in state:
        version, keys, gauss = state["python"]
        random.setstate((version, tuple(keys), gauss))
    if "numpy" in state:
        saved = state["numpy"]
        np.random.set_state(
            (
                saved["kind"],
                saved["keys"].numpy().astype(np.uint32),
                saved["pos"],
                saved["has_gauss"],
                saved["cached_gaussian"],
            )
        )
