"""CheckpointKeeper: the last N checkpoints, the best by a metric, early stopping, crash safety."""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from detkit.engine import CheckpointKeeper, load_checkpoint
from detkit.engine import keeper as keeper_module

SRC = Path(__file__).resolve().parents[2] / "src"


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def saved_epoch(path: Path) -> int:
    return torch.load(path, weights_only=True)["epoch"]


def ap(value: float) -> dict:
    return {"num_images": 3, "bbox": {"AP": value, "AP50": 2 * value}}


@given(
    values=st.lists(st.sampled_from([0.1, 0.2, 0.3, 0.4, float("nan")]), min_size=1, max_size=12),
    patience=st.integers(1, 4),
    maximize=st.booleans(),
)
def test_best_epoch_and_stopping_follow_their_definitions(values, patience, maximize):
    keeper = CheckpointKeeper(
        "unused", metric="bbox/AP", mode="max" if maximize else "min", patience=patience
    )
    stopped_at = None
    for epoch, value in enumerate(values):
        keeper.update(epoch, ap(value))
        if keeper.should_stop:
            stopped_at = epoch
            break
    seen = values[: epoch + 1]
    finite = [(v, e) for e, v in enumerate(seen) if not math.isnan(v)]
    if not finite:
        assert keeper.best_epoch is None and keeper.best_value is None
    else:
        # The first epoch reaching the best value (a tie is no improvement).
        best = max(v for v, _ in finite) if maximize else min(v for v, _ in finite)
        assert keeper.best_epoch == next(e for v, e in finite if v == best)
        assert keeper.best_value == best
    # Stops at the first epoch `patience` evaluations after the last improvement.
    last_improvement = -1 if keeper.best_epoch is None else keeper.best_epoch
    if stopped_at is not None:
        assert stopped_at - last_improvement == patience
    else:
        assert len(values) - 1 - last_improvement < patience


def test_keeps_the_last_n_and_the_best_and_stops(tmp_path):
    keeper = CheckpointKeeper(tmp_path, keep_last=2, patience=2)
    model = nn.Linear(2, 1)
    history = []
    for epoch, value in enumerate([0.30, 0.42, 0.41, 0.45, 0.44, 0.43, 0.50]):
        with torch.no_grad():
            model.bias.fill_(epoch)  # tells the files apart
        path = keeper.save(epoch, ap(value), model=model)
        assert path == tmp_path / f"checkpoint_{epoch:03d}.pt"
        history.append((names(tmp_path), keeper.best_epoch, keeper.should_stop))
        if keeper.should_stop:
            break
    assert history == [
        (["best.pt", "checkpoint_000.pt"], 0, False),
        (["best.pt", "checkpoint_000.pt", "checkpoint_001.pt"], 1, False),
        (["best.pt", "checkpoint_001.pt", "checkpoint_002.pt"], 1, False),
        (["best.pt", "checkpoint_002.pt", "checkpoint_003.pt"], 3, False),
        (["best.pt", "checkpoint_003.pt", "checkpoint_004.pt"], 3, False),
        (["best.pt", "checkpoint_004.pt", "checkpoint_005.pt"], 3, True),
    ]
    best = load_checkpoint(tmp_path / "best.pt", restore_rng=False)
    assert best["epoch"] == 3 and float(best["model"]["bias"]) == 3.0
    assert best["extra"]["checkpoint_keeper"] == {
        "metric": "bbox/AP",
        "mode": "max",
        "best_value": 0.45,
        "best_epoch": 3,
        "evaluations_without_improvement": 0,
    }
    assert keeper.metric == "bbox/AP" and keeper.best_value == 0.45


def test_default_keeps_every_checkpoint_and_never_stops(tmp_path):
    keeper = CheckpointKeeper(tmp_path)
    for epoch in range(4):
        keeper.save(epoch, ap(0.5 - epoch / 10), model=nn.Linear(1, 1))
    assert not keeper.should_stop and keeper.best_epoch == 0
    assert names(tmp_path) == ["best.pt"] + [f"checkpoint_{e:03d}.pt" for e in range(4)]


def test_epochs_without_metrics_are_saved_and_rotated_but_not_ranked(tmp_path):
    keeper = CheckpointKeeper(tmp_path, keep_last=1, patience=1)
    keeper.save(0, ap(0.2), model=nn.Linear(1, 1))
    keeper.save(1, None, model=nn.Linear(1, 1))
    assert (keeper.best_epoch, keeper.evaluations_without_improvement) == (0, 0)
    assert names(tmp_path) == ["best.pt", "checkpoint_001.pt"]
    assert saved_epoch(tmp_path / "best.pt") == 0  # kept although rotated out


def test_default_metric_follows_the_iou_types_and_mode_follows_the_name():
    assert CheckpointKeeper.default_metric(ap(0.1)) == "bbox/AP"
    assert CheckpointKeeper.default_metric({**ap(0.1), "segm": {"AP": 0.2}}) == "segm/AP"
    assert CheckpointKeeper.default_metric({**ap(0.1), "keypoints": {"AP": 0.2}}) == "keypoints/AP"
    keeper = CheckpointKeeper("unused")
    assert keeper.metric is None
    keeper.update(0, {**ap(0.1), "segm": {"AP": 0.25}})
    assert (keeper.metric, keeper.mode, keeper.best_value) == ("segm/AP", "max", 0.25)
    keeper = CheckpointKeeper("unused", metric="losses/loss_mask")
    assert keeper.mode == "min"
    assert CheckpointKeeper("unused", metric="losses/loss", mode="max").mode == "max"


def test_min_delta_and_an_absent_metric(tmp_path):
    keeper = CheckpointKeeper(tmp_path, min_delta=0.05)
    assert keeper.update(0, ap(0.30))
    assert not keeper.update(1, ap(0.34))  # not better by more than 0.05
    assert keeper.update(2, ap(0.36))
    with pytest.raises(ValueError, match=r"'bbox/APx': no 'APx' in the metrics \(found \['AP'"):
        CheckpointKeeper(tmp_path, metric="bbox/APx").update(0, ap(0.3))
    with pytest.raises(
        ValueError, match=r"no 'segm' in the metrics \(found \['bbox', 'num_images'"
    ):
        CheckpointKeeper(tmp_path, metric="segm/AP").update(0, ap(0.3))


@pytest.mark.parametrize("metric", ["bbox/APl", "keypoints/AP", "segm/per_class_AP/3"])
def test_an_undefined_coco_statistic_is_refused_not_ranked(tmp_path, metric):
    """pycocotools gives -1.0 where a statistic is undefined (no ground truth in its area
    range or class): it depends on the ground truth only, so it never changes, and a keeper
    ranking by it stopped after `patience` epochs with epoch 0 as the best, without a word."""
    iou_type = metric.split("/")[0]
    metrics = {"num_images": 4, iou_type: {"AP": 0.4, "APl": -1.0, "per_class_AP": {3: -1.0}}}
    if metric == "keypoints/AP":
        metrics[iou_type]["AP"] = -1.0
    keeper = CheckpointKeeper(tmp_path, metric=metric, patience=2)
    message = rf"metric '{metric}' is -1.0, pycocotools' mark of an undefined statistic"
    with pytest.raises(ValueError, match=message):
        keeper.save(0, metrics, model=nn.Linear(2, 1))
    assert names(tmp_path) == []
    assert keeper.best_epoch is None and keeper.evaluations_without_improvement == 0
    # per_class_AP is keyed by int category ids; the path names them as text.
    by_class = CheckpointKeeper(tmp_path, metric="bbox/per_class_AP/7")
    assert by_class.update(0, {"bbox": {"per_class_AP": {7: 0.5}}}) and by_class.best_value == 0.5
    # A metric of one's own may be -1.0; so may a loss (it is not a COCO statistic).
    assert CheckpointKeeper(tmp_path, metric="mine/score").update(0, {"mine": {"score": -1.0}})
    assert CheckpointKeeper(tmp_path, metric="losses/loss").update(0, {"losses": {"loss": -1.0}})


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"keep_last": 0}, "keep_last must be an int >= 1 or None, got 0"),
        ({"patience": 0}, "patience must be an int >= 1 or None"),
        ({"mode": "best"}, "mode must be 'max', 'min' or None"),
        ({"min_delta": -1.0}, "min_delta must be >= 0"),
        ({"filename": "checkpoint.pt"}, "one '{epoch}' field"),
        ({"filename": "run/{epoch}.pt"}, "a file name inside folder"),
        ({"best_filename": "checkpoint_999.pt"}, "looks like an epoch's checkpoint"),
        ({"metric": ""}, "metric must be a name such as 'bbox/AP'"),
    ],
)
def test_bad_options_are_named(options, match):
    with pytest.raises(ValueError, match=match):
        CheckpointKeeper("runs", **options)


def test_extra_is_kept_beside_the_keepers_state(tmp_path):
    keeper = CheckpointKeeper(tmp_path)
    path = keeper.save(0, ap(0.1), model=nn.Linear(1, 1), extra={"note": "first"})
    extra = torch.load(path, weights_only=True)["extra"]
    assert extra["note"] == "first" and extra["checkpoint_keeper"]["best_epoch"] == 0
    with pytest.raises(TypeError, match="extra must be a mapping"):
        keeper.save(1, ap(0.1), model=nn.Linear(1, 1), extra=[1])


def test_resume_gives_the_decisions_of_an_uninterrupted_run(tmp_path):
    values = [0.3, 0.5, 0.4, 0.45, 0.6, 0.2, 0.1]
    model = nn.Linear(1, 1)

    def run(folder, keeper, epochs):
        decisions = []
        for epoch in epochs:
            keeper.save(epoch, ap(values[epoch]), model=model)
            decisions.append((keeper.best_epoch, keeper.best_value, keeper.should_stop))
        return decisions

    options = {"keep_last": 2, "patience": 2}
    uninterrupted = run(tmp_path / "a", CheckpointKeeper(tmp_path / "a", **options), range(7))
    first = run(tmp_path / "b", CheckpointKeeper(tmp_path / "b", **options), range(4))
    resumed = CheckpointKeeper(tmp_path / "b", **options)
    checkpoint = load_checkpoint(tmp_path / "b" / "checkpoint_003.pt", model=model)
    assert resumed.restore(checkpoint, tmp_path / "b" / "checkpoint_003.pt")
    assert (resumed.best_epoch, resumed.evaluations_without_improvement) == (1, 2)
    assert first + run(tmp_path / "b", resumed, range(4, 7)) == uninterrupted
    assert names(tmp_path / "a") == names(tmp_path / "b")
    assert saved_epoch(tmp_path / "b" / "best.pt") == 4


def test_restore_without_a_keeper_state_or_with_another_metric(tmp_path, caplog):
    from detkit.engine import save_checkpoint

    plain = save_checkpoint(tmp_path / "plain.pt", model=nn.Linear(1, 1), epoch=0)
    keeper = CheckpointKeeper(tmp_path)
    assert not keeper.restore(load_checkpoint(plain), plain)
    assert keeper.best_epoch is None
    path = CheckpointKeeper(tmp_path).save(0, ap(0.3), model=nn.Linear(1, 1))
    other = CheckpointKeeper(tmp_path, metric="bbox/AP50")
    with caplog.at_level(logging.WARNING, logger="detkit.engine.keeper"):
        assert other.restore(load_checkpoint(path), path)
    assert other.best_epoch is None and other.metric == "bbox/AP50"
    assert "ranked by bbox/AP, now by bbox/AP50: the best starts afresh" in caplog.text


def test_a_failed_save_keeps_the_previous_best_and_state(tmp_path, monkeypatch):
    keeper = CheckpointKeeper(tmp_path, keep_last=1)
    keeper.save(0, ap(0.2), model=nn.Linear(1, 1))

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        keeper.save(1, ap(0.9), model=nn.Linear(1, 1))
    monkeypatch.undo()
    assert (keeper.best_epoch, keeper.best_value) == (0, 0.2)  # the unsaved epoch does not count
    assert names(tmp_path) == ["best.pt", "checkpoint_000.pt"]
    assert saved_epoch(tmp_path / "best.pt") == 0


def test_a_failed_best_link_is_retried_before_its_checkpoint_is_rotated(tmp_path, monkeypatch):
    """A full disk when best.pt is linked to a new best epoch: the error reaches the caller;
    if it carries on, the next save links best.pt first, so that rotating (keep_last=1) never
    removes the only copy of the best epoch's weights."""
    keeper = CheckpointKeeper(tmp_path, keep_last=1)
    keeper.save(0, ap(0.1), model=nn.Linear(1, 1))
    real = keeper_module.atomic_link

    def full_disk(source, destination):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keeper_module, "atomic_link", full_disk)
    with pytest.raises(OSError, match="No space left"):
        keeper.save(1, ap(0.5), model=nn.Linear(1, 1))
    monkeypatch.setattr(keeper_module, "atomic_link", real)
    keeper.save(2, ap(0.3), model=nn.Linear(1, 1))
    assert keeper.best_epoch == 1
    assert names(tmp_path) == ["best.pt", "checkpoint_002.pt"]
    assert saved_epoch(tmp_path / "best.pt") == 1


def test_without_hard_links_best_is_an_atomic_copy(tmp_path, monkeypatch):
    def no_links(source, destination):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    keeper = CheckpointKeeper(tmp_path, keep_last=1)
    for epoch in range(3):
        keeper.save(epoch, ap(epoch / 10), model=nn.Linear(1, 1))
    assert names(tmp_path) == ["best.pt", "checkpoint_002.pt"]
    assert (tmp_path / "best.pt").read_bytes() == (tmp_path / "checkpoint_002.pt").read_bytes()
    assert os.stat(tmp_path / "best.pt").st_ino != os.stat(tmp_path / "checkpoint_002.pt").st_ino


# One process per kill point, forked from one that imported torch once. In each: epochs 0 and 1
# are saved (AP 0.1, 0.2: best 1, one kept), then epoch 2's save (AP 0.3, a new best) is killed
# at the point named. Prints each child's exit status.
KILLED_RUNS = """
import io, os, signal, sys
import torch
from torch import nn
from detkit.engine import CheckpointKeeper, keeper as module

torch.set_num_threads(1)


def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


def run(folder, point):
    keeper = CheckpointKeeper(folder, keep_last=1)
    model = nn.Linear(64, 64)
    for epoch in range(2):
        keeper.save(epoch, {"bbox": {"AP": 0.1 * (epoch + 1)}}, model=model)
    real_save, real_replace = torch.save, os.replace

    def half_then_die(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        die()

    if point == "writing":
        torch.save = half_then_die
    elif point == "before-best":
        module.atomic_link = die
    elif point == "renaming-best":
        # atomic_write's own rename of the checkpoint happens before the link's.
        os.replace = lambda a, b: die() if ".best.pt." in str(a) else real_replace(a, b)
    elif point == "rotating":
        module.Path.unlink = die
    keeper.save(2, {"bbox": {"AP": 0.3}}, model=model)


for point in sys.argv[2:]:
    pid = os.fork()
    if pid == 0:
        try:
            run(os.path.join(sys.argv[1], point), point)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    print(point, os.WTERMSIG(status) if os.WIFSIGNALED(status) else -1)
"""

# point: (files left, epoch best.pt holds after the kill)
KILL_POINTS = {
    "writing": (["checkpoint_001.pt"], 1),
    "before-best": (["checkpoint_001.pt", "checkpoint_002.pt"], 1),
    "renaming-best": (["checkpoint_001.pt", "checkpoint_002.pt"], 1),
    "rotating": (["checkpoint_001.pt", "checkpoint_002.pt"], 2),
}


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("killed")
    env = dict(os.environ, PYTHONPATH=str(SRC))
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLED_RUNS), str(root), *KILL_POINTS],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return root, dict(line.split() for line in result.stdout.splitlines())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork and POSIX signals")
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_killed_save_never_leaves_best_partial_and_resume_repairs_it(killed_runs, point):
    root, statuses = killed_runs
    folder = root / point
    files, best_after_kill = KILL_POINTS[point]
    assert statuses[point] == str(int(signal.SIGKILL))
    visible = [name for name in names(folder) if not name.startswith(".")]
    assert visible == ["best.pt", *files]
    # best.pt is a complete checkpoint, of the best epoch saved before the kill or of the new.
    assert saved_epoch(folder / "best.pt") == best_after_kill
    # Resuming from the newest complete checkpoint points best.pt at the best epoch it knows.
    newest = folder / files[-1]
    model = nn.Linear(64, 64)
    keeper = CheckpointKeeper(folder, keep_last=1)
    checkpoint = load_checkpoint(newest, model=model)
    assert keeper.restore(checkpoint, newest)
    assert saved_epoch(folder / "best.pt") == keeper.best_epoch == checkpoint["epoch"]
    # The next save removes what the killed run left behind.
    keeper.save(checkpoint["epoch"] + 1, {"bbox": {"AP": 0.05}}, model=model)
    visible = [name for name in names(folder) if not name.startswith(".")]
    assert visible == ["best.pt", f"checkpoint_{checkpoint['epoch'] + 1:03d}.pt"]
