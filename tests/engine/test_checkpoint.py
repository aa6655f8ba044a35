"""Checkpoints: plain data, atomic writes under crashes, exact resume."""

from __future__ import annotations

import argparse
import errno
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


def record_bytes(path: Path, suffix: str) -> tuple[int, int]:
    """Where the bytes of the zip record whose name ends with ``suffix`` lie in ``path``."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(suffix))
    with open(path, "rb") as file:
        file.seek(info.header_offset + 26)
        name_length, extra_length = np.frombuffer(file.read(4), dtype="<u2").tolist()
    start = info.header_offset + 30 + name_length + extra_length
    return start, start + info.file_size


def test_a_damaged_checkpoint_is_refused_naming_the_file_and_restores_nothing(tmp_path):
    """torch.load does not check the zip records' CRC-32: altered tensor bytes (a bad copy or
    disk) loaded silently, the model resuming with wrong (here NaN) weights."""
    model, optimizer, _ = small_setup()
    good = save_checkpoint(tmp_path / "good.pt", model=model, optimizer=optimizer, epoch=0)
    weight = model.state_dict()["0.weight"]
    start, end = record_bytes(good, "data/0")
    assert end - start == weight.numel() * weight.element_size()
    damaged = bytearray(good.read_bytes())
    damaged[start : start + 8] = b"\xff" * 8
    (tmp_path / "damaged.pt").write_bytes(bytes(damaged))
    assert torch.load(tmp_path / "damaged.pt", weights_only=True)["model"]["0.weight"].isnan().any()
    fresh, fresh_optimizer, _ = small_setup(seed=1)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(ValueError, match=r"checkpoint '.*damaged\.pt' is damaged: .*data/0"):
        load_checkpoint(tmp_path / "damaged.pt", model=fresh, optimizer=fresh_optimizer)
    assert all(torch.equal(v, before[k]) for k, v in fresh.state_dict().items())
    assert load_checkpoint(good, model=fresh)["epoch"] == 0
    # A damaged pickle fails inside torch.load ("'utf-8' codec can't decode byte ..."), which
    # advised torch.load(weights_only=False) "if you trust it": the damage is named instead.
    start, _ = record_bytes(good, "data.pkl")
    damaged = bytearray(good.read_bytes())
    damaged[start + 10] ^= 0x5A
    (tmp_path / "pickle.pt").write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match=r"checkpoint '.*pickle\.pt' is damaged: .*data\.pkl"):
        load_checkpoint(tmp_path / "pickle.pt", model=fresh)


def test_a_checkpoint_written_without_checksums_still_loads(tmp_path):
    """torch.save writes CRC-32 0 when told not to compute checksums: nothing to verify."""
    model, _, _ = small_setup()
    torch.serialization.set_crc32_options(False)
    try:
        path = save_checkpoint(tmp_path / "last.pt", model=model, epoch=2)
    finally:
        torch.serialization.set_crc32_options(True)
    import zipfile

    with zipfile.ZipFile(path) as archive:
        assert {i.CRC for i in archive.infolist()} == {0}
    assert load_checkpoint(path, model=small_setup(seed=1)[0])["epoch"] == 2


def test_a_cut_short_checkpoint_says_so(tmp_path):
    model, _, _ = small_setup()
    good = save_checkpoint(tmp_path / "good.pt", model=model, epoch=0)
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"'.*cut\.pt' safely: it is cut short"):
        load_checkpoint(tmp_path / "cut.pt", model=model)


@pytest.mark.parametrize("map_location", ["cuda:3", "nonsense"])
def test_a_map_location_this_machine_lacks_is_named_not_blamed_on_the_file(tmp_path, map_location):
    """torch.load failing on map_location was reported as a file 'not written by
    save_checkpoint (or damaged)', with advice to load it with weights_only=False."""
    if map_location.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    model, _, _ = small_setup()
    path = save_checkpoint(tmp_path / "last.pt", model=model, epoch=0)
    with pytest.raises(ValueError) as caught:
        load_checkpoint(path, model=model, map_location=map_location)
    message = str(caught.value)
    assert message.startswith(f"cannot load checkpoint '{path}' with map_location={map_location!r}")
    assert "weights_only=False" not in message and "not written by it" not in message
    assert load_checkpoint(path, model=model, map_location="cpu")["epoch"] == 0


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
    # The next run's first save into the folder removes what the killed one left (once it
    # has lain untouched for a minute: a write in progress elsewhere is never removed).
    os.utime(tmp_path / leftovers[0], (0, 0))
    script = "import sys; from torch import nn; from detkit.engine import save_checkpoint; "
    script += "save_checkpoint(sys.argv[1], model=nn.Linear(64, 64), epoch=1)"
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "last.pt")], env=env, check=True)
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]


def test_a_full_disk_names_the_checkpoint_and_keeps_the_previous_one(tmp_path, monkeypatch):
    model, optimizer, _ = small_setup()
    path = save_checkpoint(tmp_path / "last.pt", model=model, optimizer=optimizer, epoch=0)
    before = path.read_bytes()

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError) as caught:
        save_checkpoint(path, model=model, optimizer=optimizer, epoch=1)
    monkeypatch.undo()
    assert caught.value.errno == errno.ENOSPC
    assert str(caught.value) == f"[Errno 28] No space left on device: '{path}'"
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]


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


# -- load_checkpoint checks that everything fits before restoring anything --------------------


def snapshot(*modules):
    return [{k: v.clone() for k, v in m.state_dict().items()} for m in modules]


def unchanged(before, *modules):
    return all(
        all(torch.equal(state[k], v) for k, v in m.state_dict().items())
        for state, m in zip(before, modules)
    )


def test_sgd_state_into_adam_is_refused_before_the_model_is_touched(tmp_path):
    model, optimizer, _ = small_setup()
    take_a_step(model, optimizer, torch.optim.lr_scheduler.StepLR(optimizer, 1))
    path = save_checkpoint(tmp_path / "sgd.pt", model=model, optimizer=optimizer, epoch=0)
    fresh, _, _ = small_setup(seed=4)
    adam = torch.optim.Adam(fresh.parameters())
    before = snapshot(fresh)
    with pytest.raises(ValueError) as caught:
        load_checkpoint(path, model=fresh, optimizer=adam)
    assert str(caught.value) == (
        f"cannot restore from checkpoint '{path}': checkpoint's optimizer is SGD, yours is Adam"
    )
    assert unchanged(before, fresh)
    assert adam.state_dict()["state"] == {}


def test_a_checkpoint_of_an_older_detkit_without_types_still_names_the_optimizer_clash(tmp_path):
    model, optimizer, _ = small_setup()
    take_a_step(model, optimizer, torch.optim.lr_scheduler.StepLR(optimizer, 1))
    path = save_checkpoint(tmp_path / "old.pt", model=model, optimizer=optimizer, epoch=0)
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint["types"]
    torch.save(checkpoint, path)
    with pytest.raises(ValueError, match=r"options .*momentum.*nesterov.*yours \(Adam\) has"):
        load_checkpoint(path, optimizer=torch.optim.Adam(model.parameters()))


def test_another_class_count_is_named_and_nothing_is_restored(tmp_path):
    from detkit.models import replace_heads

    saved = replace_heads(tiny_detector(seed=0), 3)
    path = save_checkpoint(tmp_path / "three.pt", model=saved, epoch=2)
    model = replace_heads(tiny_detector(seed=1), 5)
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"'.*three\.pt': checkpoint has 3 classes, model has 5 "):
        load_checkpoint(path, model=model)
    assert unchanged(before, model)


def test_keypoint_count_and_missing_tensors_are_named(tmp_path):
    path = save_checkpoint(tmp_path / "k.pt", model=tiny_detector(keypoints=17), epoch=0)
    with pytest.raises(ValueError, match="checkpoint has 17 keypoints, model has 5"):
        load_checkpoint(path, model=tiny_detector(keypoints=5))
    with pytest.raises(ValueError, match=r"the checkpoint has \d+ tensors \('roi_heads\.keypoint"):
        load_checkpoint(path, model=tiny_detector())
    load_checkpoint(path, model=tiny_detector(), strict=False)  # loads what matches


def test_other_parameter_groups_and_schedulers_are_named(tmp_path):
    model, optimizer, scheduler = small_setup()
    take_a_step(model, optimizer, scheduler)
    path = save_checkpoint(
        tmp_path / "a.pt", model=model, optimizer=optimizer, lr_scheduler=scheduler, epoch=0
    )
    fresh, _, _ = small_setup(seed=2)
    before = snapshot(fresh)
    two_groups = torch.optim.SGD(
        [{"params": fresh[0].parameters()}, {"params": fresh[2].parameters()}], lr=0.1, momentum=0.9
    )
    with pytest.raises(
        ValueError, match="checkpoint's optimizer has 1 parameter groups, yours has 2"
    ):
        load_checkpoint(path, model=fresh, optimizer=two_groups)
    fewer = torch.optim.SGD(fresh[2].parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"hold \[4\] parameters, yours \[2\]"):
        load_checkpoint(path, model=fresh, optimizer=fewer)
    reordered = torch.optim.SGD(list(fresh.parameters())[::-1], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"parameter 0's momentum_buffer is \[4, 3\]"):
        load_checkpoint(path, model=fresh, optimizer=reordered)
    same = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(same, T_max=10)
    with pytest.raises(ValueError, match="checkpoint's lr_scheduler is StepLR, yours is CosineAnn"):
        load_checkpoint(path, model=fresh, optimizer=same, lr_scheduler=cosine)
    assert unchanged(before, fresh)
    assert same.state_dict()["state"] == {}


def test_a_missing_generator_or_scaler_state_restores_nothing(tmp_path):
    model, optimizer, _ = small_setup()
    path = save_checkpoint(
        tmp_path / "a.pt",
        model=model,
        optimizer=optimizer,
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        epoch=0,
    )
    fresh, _, _ = small_setup(seed=3)
    before = snapshot(fresh)
    with pytest.raises(ValueError, match="no state for generator 'loader'"):
        load_checkpoint(path, model=fresh, generators={"loader": torch.Generator()})
    with pytest.raises(ValueError, match="checkpoint's GradScaler was disabled"):
        load_checkpoint(path, model=fresh, scaler=torch.amp.GradScaler("cpu"))
    assert unchanged(before, fresh)


def test_a_pickled_file_gives_one_plain_line(tmp_path):
    torch.save({"args": argparse.Namespace(lr=0.1), "model": {}}, tmp_path / "reference.pth")
    with pytest.raises(ValueError) as caught:
        load_checkpoint(tmp_path / "reference.pth", model=nn.Linear(2, 1))
    message = str(caught.value)
    assert "\n" not in message and "\x1b" not in message
    assert message.startswith(
        f"cannot read checkpoint '{tmp_path / 'reference.pth'}' safely: it holds a pickled "
        "argparse.Namespace, which torch.load(weights_only=True) refuses to run."
    )
    with pytest.raises(FileNotFoundError, match="is a directory"):
        load_checkpoint(tmp_path)
