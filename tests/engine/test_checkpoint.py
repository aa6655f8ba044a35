"""Checkpoints: plain data, atomic writes under crashes, exact resume."""

from __future__ import annotations

import argparse
import io
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from strategies import synthetic_detection_samples, tiny_detector
from torch import nn

from detkit.data import collate_fn
from detkit.engine import (
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
    train_one_epoch,
)

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def detection_samples(tmp_path_factory):
    return synthetic_detection_samples(tmp_path_factory.mktemp("engine-ckpt"), num_images=8)


def small_setup(seed: int = 0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    return model, optimizer, scheduler


def take_a_step(model, optimizer, scheduler):
    optimizer.zero_grad()
    model(torch.ones(2, 3)).sum().backward()
    optimizer.step()
    scheduler.step()


def test_checkpoint_is_plain_data_that_weights_only_loads(tmp_path):
    model, optimizer, scheduler = small_setup()
    take_a_step(model, optimizer, scheduler)
    scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
    args = argparse.Namespace(data=Path("/data/pennfudan"), lr=0.1, steps=[8, 11], amp=False)
    path = save_checkpoint(
        tmp_path / "run" / "last.pt",
        model=nn.DataParallel(model),  # saved unwrapped: no "module." prefix
        optimizer=optimizer,
        lr_scheduler=scheduler,
        scaler=scaler,
        epoch=4,
        step=120,
        config=args,
        extra={"best_ap": np.float64(0.5), "history": (0.1, 0.2)},
    )
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["epoch"] == 4 and checkpoint["step"] == 120
    assert checkpoint["config"] == {
        "data": "/data/pennfudan",
        "lr": 0.1,
        "steps": [8, 11],
        "amp": False,
    }
    assert checkpoint["extra"] == {"best_ap": 0.5, "history": (0.1, 0.2)}
    assert type(checkpoint["extra"]["best_ap"]) is float
    assert list(checkpoint["model"]) == list(model.state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(checkpoint["model"][key], value)
    assert checkpoint["optimizer"]["state"][0]["momentum_buffer"].shape == (4, 3)
    assert checkpoint["lr_scheduler"]["last_epoch"] == 1
    assert checkpoint["scaler"]["scale"] == 256.0
    assert len(checkpoint["rng"]) == 1 and checkpoint["world_size"] == 1
    assert sorted(os.listdir(path.parent)) == ["last.pt"]  # no temporary file left


def test_load_checkpoint_restores_every_state(tmp_path):
    model, optimizer, scheduler = small_setup()
    take_a_step(model, optimizer, scheduler)
    take_a_step(model, optimizer, scheduler)
    path = save_checkpoint(
        tmp_path / "a.pt", model=model, optimizer=optimizer, lr_scheduler=scheduler, epoch=1
    )
    fresh_model, fresh_optimizer, fresh_scheduler = small_setup(seed=5)
    checkpoint = load_checkpoint(
        path, model=fresh_model, optimizer=fresh_optimizer, lr_scheduler=fresh_scheduler
    )
    assert checkpoint["epoch"] == 1
    for a, b in zip(model.parameters(), fresh_model.parameters()):
        assert torch.equal(a, b)
    # Continuing both gives the same weights (momentum and schedule restored).
    take_a_step(model, optimizer, scheduler)
    take_a_step(fresh_model, fresh_optimizer, fresh_scheduler)
    for a, b in zip(model.parameters(), fresh_model.parameters()):
        assert torch.equal(a, b)
    assert fresh_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"] == 0.05


def test_non_plain_config_is_refused_naming_the_entry(tmp_path):
    model, _, _ = small_setup()
    with pytest.raises(TypeError, match=r"config\['augment'\]\['transform'\].*function"):
        save_checkpoint(
            tmp_path / "x.pt",
            model=model,
            epoch=0,
            config={"augment": {"transform": lambda x: x}},
        )
    assert not (tmp_path / "x.pt").exists()


def test_load_errors_say_what_is_wrong(tmp_path):
    model, optimizer, _ = small_setup()
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        load_checkpoint(tmp_path / "missing.pt", model=model)
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="not a detkit checkpoint"):
        load_checkpoint(tmp_path / "bare.pt", model=model)
    save_checkpoint(tmp_path / "weights.pt", model=model, epoch=0)
    with pytest.raises(ValueError, match="no optimizer state"):
        load_checkpoint(tmp_path / "weights.pt", model=model, optimizer=optimizer)
    with pytest.raises(ValueError, match="no state for generator 'loader'"):
        load_checkpoint(tmp_path / "weights.pt", generators={"loader": torch.Generator()})


def test_unreadable_checkpoint_is_a_value_error_naming_the_file(tmp_path):
    model, _, _ = small_setup()
    good = save_checkpoint(tmp_path / "good.pt", model=model, epoch=0)
    (tmp_path / "truncated.pt").write_bytes(good.read_bytes()[:100])
    torch.save({"config": argparse.Namespace(lr=0.1)}, tmp_path / "pickled.pt")
    for name in ("truncated.pt", "pickled.pt"):
        with pytest.raises(ValueError, match=rf"cannot read checkpoint '.*{name}' safely"):
            load_checkpoint(tmp_path / name, model=model)


def test_rng_state_round_trip_covers_torch_python_and_numpy():
    state = get_rng_state()
    first = (torch.rand(3), random.random(), np.random.rand(3))
    set_rng_state(state)
    again = (torch.rand(3), random.random(), np.random.rand(3))
    assert torch.equal(first[0], again[0])
    assert first[1] == again[1]
    assert np.array_equal(first[2], again[2])


def test_crash_while_saving_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    model, optimizer, scheduler = small_setup()
    path = save_checkpoint(tmp_path / "last.pt", model=model, optimizer=optimizer, epoch=0)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    take_a_step(model, optimizer, scheduler)
    real_save = torch.save

    def half_then_fail(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, model=model, optimizer=optimizer, epoch=1)
    monkeypatch.undo()
    checkpoint = load_checkpoint(path)
    assert checkpoint["epoch"] == 0
    assert all(torch.equal(checkpoint["model"][k], v) for k, v in saved.items())
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]  # the partial file was removed


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_process_killed_while_saving_leaves_the_previous_checkpoint_loadable(tmp_path):
    # A real kill: the process dies mid-write with no chance to clean up.
    script = textwrap.dedent(
        """
        import io, os, signal, sys
        import torch
        from torch import nn
        from detkit.engine import save_checkpoint

        path = sys.argv[1]
        model = nn.Linear(64, 64)
        save_checkpoint(path, model=model, epoch=0)
        real_save = torch.save

        def half_then_die(obj, f, *args, **kwargs):
            buffer = io.BytesIO()
            real_save(obj, buffer)
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        torch.save = half_then_die
        with torch.no_grad():
            model.weight.add_(1.0)
        save_checkpoint(path, model=model, epoch=1)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(SRC))
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "last.pt")], env=env, capture_output=True
    )
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()[-2000:]
    checkpoint = torch.load(tmp_path / "last.pt", weights_only=True)
    assert checkpoint["epoch"] == 0
    leftovers = [name for name in os.listdir(tmp_path) if name != "last.pt"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".last.pt.")  # the dead write


def train_run(samples, *, seed_model: int = 0):
    """Model, optimizer, per-iteration scheduler and a shuffling loader for a resume test."""
    model = tiny_detector(seed=seed_model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.7)
    loader = torch.utils.data.DataLoader(samples, batch_size=2, shuffle=True, collate_fn=collate_fn)
    return model, optimizer, scheduler, loader


def train_epochs(model, optimizer, scheduler, loader, epochs):
    for epoch in epochs:
        train_one_epoch(
            model,
            optimizer,
            loader,
            "cpu",
            epoch,
            lr_scheduler=scheduler,
            lr_scheduler_interval="iteration",
            progress=False,
        )


def scramble_global_rngs():
    """What a fresh process looks like: other seeds, other draws already made."""
    torch.manual_seed(987)
    random.seed(987)
    np.random.seed(987)
    torch.rand(5)


def test_resume_equals_an_uninterrupted_run(detection_samples, tmp_path):
    torch.manual_seed(0)
    model, optimizer, scheduler, loader = train_run(detection_samples)
    train_epochs(model, optimizer, scheduler, loader, [0, 1])
    uninterrupted = model.state_dict()

    torch.manual_seed(0)
    model, optimizer, scheduler, loader = train_run(detection_samples)
    train_epochs(model, optimizer, scheduler, loader, [0])
    save_checkpoint(
        tmp_path / "last.pt", model=model, optimizer=optimizer, lr_scheduler=scheduler, epoch=0
    )
    del model, optimizer, scheduler, loader

    def resume(restore_rng: bool):
        scramble_global_rngs()
        model, optimizer, scheduler, loader = train_run(detection_samples, seed_model=3)
        checkpoint = load_checkpoint(
            tmp_path / "last.pt",
            model=model,
            optimizer=optimizer,
            lr_scheduler=scheduler,
            restore_rng=restore_rng,
        )
        train_epochs(model, optimizer, scheduler, loader, [checkpoint["epoch"] + 1])
        return model.state_dict()

    resumed = resume(restore_rng=True)
    for key, value in uninterrupted.items():
        torch.testing.assert_close(resumed[key], value, rtol=1e-5, atol=1e-6, msg=key)
    # Control: without the random states, data order and sampling differ and so do the
    # weights, so the comparison above is not vacuous.
    diverged = resume(restore_rng=False)
    assert any(
        not torch.allclose(diverged[key], value, rtol=1e-4, atol=1e-5)
        for key, value in uninterrupted.items()
    )


def test_resume_restores_a_loader_generator(tmp_path):
    samples = [(torch.full((3, 2, 2), float(i)), {"y": float(i), "image_id": i}) for i in range(8)]

    def order(generator):
        loader = torch.utils.data.DataLoader(
            samples, batch_size=2, shuffle=True, collate_fn=collate_fn, generator=generator
        )
        return [t["image_id"] for _, targets in loader for t in targets]

    generator = torch.Generator().manual_seed(0)
    order(generator)
    model = nn.Linear(1, 1)
    save_checkpoint(tmp_path / "g.pt", model=model, epoch=0, generators={"loader": generator})
    expected = order(generator)
    fresh = torch.Generator().manual_seed(1)
    load_checkpoint(tmp_path / "g.pt", generators={"loader": fresh})
    assert order(fresh) == expected
    assert order(torch.Generator().manual_seed(1)) != expected
