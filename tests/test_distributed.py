"""detkit.distributed: single-process no-ops, torchrun environment checks, a real 2-process run."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from strategies import RecordingEvaluator, load_detection_samples, tiny_detector
from torch import nn

from detkit import distributed
from detkit.data import collate_fn, write_synthetic_pennfudan
from detkit.engine import evaluate, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def clean_env(monkeypatch):
    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_single_process_everything_is_a_no_op(clean_env):
    info = distributed.init_distributed()
    assert (info.rank, info.world_size, info.local_rank, info.backend) == (0, 1, 0, None)
    assert not info.distributed and info.is_main_process
    assert info.device == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert not distributed.is_dist_avail_and_initialized()
    assert distributed.get_local_rank() == 0
    values = {"loss_a": torch.tensor(1.5), "loss_b": torch.tensor(2.0)}
    reduced = distributed.reduce_dict(values)
    assert reduced == values and reduced is not values
    model = nn.Linear(2, 2)
    assert distributed.wrap_ddp(model) is model
    assert distributed.unwrap_model(model) is model
    assert distributed.all_gather([1, "a"]) == [[1, "a"]]
    distributed.barrier()
    distributed.destroy_distributed()


def test_local_rank_alone_is_reported_alike_everywhere(clean_env):
    """A single process started with only LOCAL_RANK set (a launcher's leftover, or a way
    to pick the device): init_distributed and get_local_rank agree on it."""
    clean_env.setenv("LOCAL_RANK", "1")
    info = distributed.init_distributed()
    assert (info.rank, info.world_size, info.local_rank) == (0, 1, 1)
    assert distributed.get_local_rank() == 1
    assert distributed.init_distributed(local_rank=0).local_rank == 0  # the argument wins


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"RANK": "0"}, "rank and world size go together"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, r"rank must lie in \[0, world_size\)"),
        ({"RANK": "zero", "WORLD_SIZE": "2"}, "RANK must be an integer, got 'zero'"),
        ({"RANK": "0", "WORLD_SIZE": "2"}, "MASTER_ADDR, MASTER_PORT not set.*torchrun"),
        ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}, "MASTER_PORT not set"),
    ],
)
def test_bad_torchrun_environments_are_explained(clean_env, env, match):
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(ValueError, match=match):
        distributed.init_distributed()
    assert not distributed.is_dist_avail_and_initialized()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_nccl_without_cuda_devices_is_explained(clean_env):
    with pytest.raises(ValueError, match="one CUDA device per process"):
        distributed.init_distributed("nccl", init_method="tcp://127.0.0.1:1", rank=0, world_size=2)


def test_reduce_dict_rejects_what_it_cannot_reduce():
    with pytest.raises(TypeError, match=r"values\['loss'\] must be a tensor"):
        distributed.reduce_dict({"loss": 1.0})
    with pytest.raises(ValueError, match=r"values\['loss'\] must be a 0-d tensor"):
        distributed.reduce_dict({"loss": torch.ones(2)})


def test_wrap_ddp_refuses_a_wrapped_model():
    with pytest.raises(ValueError, match="already wrapped"):
        distributed.wrap_ddp(nn.DataParallel(nn.Linear(1, 1)))


def _describe_twice(rank: int, port: int, queue) -> None:
    """A process started without torchrun's variables: init, then init again."""
    first = distributed.init_distributed(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    again = distributed.init_distributed()
    queue.put((rank, first.local_rank, again.local_rank, again.world_size))
    distributed.barrier()
    torch.distributed.destroy_process_group()


def test_a_second_init_describes_the_group_as_the_first(clean_env):
    """Without LOCAL_RANK the local rank is the global rank, on the first call and later ones
    (on a GPU machine the second call would otherwise point every rank at cuda:0)."""
    import multiprocessing
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    processes = [
        context.Process(target=_describe_twice, args=(rank, port, queue)) for rank in range(2)
    ]
    for process in processes:
        process.start()
    results = sorted(queue.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert results == [(0, 0, 0, 2), (1, 1, 1, 2)]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """Run tests/engine/ddp_worker.py under torchrun with 2 gloo processes, once."""
    data = write_synthetic_pennfudan(
        tmp_path_factory.mktemp("ddp-data"),
        num_images=15,
        seed=3,
        size_range=(64, 112),
        thin_fraction=0.0,
    )
    out = tmp_path_factory.mktemp("ddp-out")
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])
    env["OMP_NUM_THREADS"] = "1"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(ROOT / "tests" / "engine" / "ddp_worker.py"),
        "--data",
        str(data),
        "--out",
        str(out),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    reports = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]
    return data, out, reports, result.stderr


def test_two_processes_train_in_step_under_ddp(two_process_run):
    _, _, reports, log = two_process_run
    assert [r["info"] for r in reports] == [(0, 2, 0, "gloo"), (1, 2, 1, "gloo")]
    assert all(r["wrapped"] == "DistributedDataParallel" for r in reports)
    # Gradients were all-reduced: both ranks hold the same, trained, weights.
    first = reports[0]["all_params"]
    assert torch.equal(first[0], first[1]) and torch.equal(first[0], reports[1]["params"])
    untrained = torch.cat([p.detach().flatten() for p in tiny_detector(seed=0).parameters()])
    assert not torch.allclose(first[0], untrained)
    # Losses were averaged over processes: identical on both, finite.
    assert reports[0]["losses"] == reports[1]["losses"]
    assert all(math.isfinite(v) for v in reports[0]["losses"].values())
    assert [float(r["mean"]["rank"]) for r in reports] == [0.5, 0.5]
    assert [{k: float(v) for k, v in r["sum"].items()} for r in reports] == [
        {"one": 2.0, "rank": 1.0}
    ] * 2
    # Meters: global statistics summed over ranks, the window stays each rank's own.
    assert [r["meter"] for r in reports] == [(3, 1 / 3, 0.0), (3, 1 / 3, 0.5)]
    # Only rank 0 logged the training lines.
    assert log.count("Epoch: [0]  [0/2]") == 1


def test_two_process_checkpoint_holds_each_ranks_random_state(two_process_run):
    _, out, reports, _ = two_process_run
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert checkpoint["world_size"] == 2 and len(checkpoint["rng"]) == 2
    assert not all(k.startswith("module.") for k in checkpoint["model"])
    flat = torch.cat([v.flatten() for v in checkpoint["model"].values()])
    assert torch.equal(flat, reports[0]["params"])


def test_nan_on_one_rank_raises_on_every_rank_naming_it(two_process_run):
    _, _, reports, _ = two_process_run
    for report in reports:
        message, per_rank = report["nan_error"]
        assert "rank 1:" in message and "loss_classifier=nan" in message
        assert math.isnan(per_rank[1][0]["loss_classifier"])
        assert math.isfinite(per_rank[0][0]["loss_classifier"])
        assert per_rank[1][1] == [0, 1] and per_rank[0][1] == [2, 3]  # image ids per rank


def test_two_process_evaluation_sees_each_image_once_and_equals_one_process(two_process_run):
    data, out, reports, _ = two_process_run
    # Each rank evaluated its own shard; rank 1's was padded with a duplicate of image 8.
    assert [ids for r in reports for _, ids in r["updates"]] == [
        [8, 10],
        [12, 14],
        [9, 11],
        [13, 8],
    ]
    assert reports[0]["metrics"] == reports[1]["metrics"]
    assert reports[0]["metrics"]["num_images"] == 7

    model = tiny_detector(seed=1)
    load_checkpoint(out / "checkpoint.pt", model=model, restore_rng=False)
    samples = load_detection_samples(data)[8:15]
    loader = torch.utils.data.DataLoader(samples, batch_size=2, collate_fn=collate_fn)
    evaluator = RecordingEvaluator()
    # One thread, as each torchrun worker had (OMP_NUM_THREADS=1): another thread count sums
    # convolutions in another order, and an untrained model's near-tied boxes may then swap.
    metrics = evaluate(model, loader, "cpu", evaluator=evaluator, num_threads=1, progress=False)
    assert metrics["num_images"] == 7
    assert metrics["bbox"]["num_detections"] == reports[0]["metrics"]["bbox"]["num_detections"]
    assert metrics["bbox"]["score_sum"] == pytest.approx(
        reports[0]["metrics"]["bbox"]["score_sum"], rel=1e-5
    )
    assert list(evaluator.merged) == list(reports[0]["merged"]) == list(range(8, 15))
    for image_id, prediction in evaluator.merged.items():
        for key in ("boxes", "scores", "labels"):
            torch.testing.assert_close(
                prediction[key], reports[0]["merged"][image_id][key], rtol=1e-4, atol=1e-4
            )


def test_two_process_coco_metrics_equal_one_process(two_process_run):
    data, out, reports, log = two_process_run
    assert reports[0]["coco"] == reports[1]["coco"]  # every rank gets the result
    model = tiny_detector(seed=1)
    load_checkpoint(out / "checkpoint.pt", model=model, restore_rng=False)
    samples = load_detection_samples(data)[8:15]
    loader = torch.utils.data.DataLoader(samples, batch_size=3, collate_fn=collate_fn)
    single = evaluate(model, loader, "cpu", num_threads=1, progress=False)
    assert single["num_images"] == reports[0]["coco"]["num_images"] == 7
    assert set(single) == {"num_images", "bbox"}
    for name, value in single["bbox"].items():
        if name == "per_class_AP":
            assert value.keys() == reports[0]["coco"]["bbox"][name].keys()
            continue
        assert value == pytest.approx(reports[0]["coco"]["bbox"][name], abs=1e-6), name
    # The comparison is not vacuous: the detector found some of the pedestrians.
    assert single["bbox"]["AR100"] > 0
    assert "Average Precision  (AP) @[ IoU=0.50:0.95" in log


def _buffers_equal(first: dict, second: dict) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_two_process_batch_norm_evaluation_equals_the_checkpoint_evaluated_alone(two_process_run):
    """Each rank trained batch norm on its own images; evaluate under 2 processes must give
    exactly the numbers of the saved checkpoint evaluated in one process."""
    from engine.ddp_worker import batchnorm_detector

    from detkit.data import InferenceSampler

    data, out, reports, _ = two_process_run
    trained = reports[0]["bn_trained"]
    # The statistics did drift apart: without the broadcast the ranks evaluate different models.
    assert not _buffers_equal(trained[0], trained[1])
    # evaluate gave every rank rank 0's buffers, and the checkpoint holds them.
    checkpoint = torch.load(out / "batchnorm.pt", weights_only=True)
    saved = {k: v for k, v in checkpoint["model"].items() if k in trained[0]}
    assert _buffers_equal(saved, trained[0])
    assert all(_buffers_equal(r["bn_evaluated"], trained[0]) for r in reports)
    assert reports[0]["bn_coco"] == reports[1]["bn_coco"]

    model = batchnorm_detector(seed=1)
    load_checkpoint(out / "batchnorm.pt", model=model, restore_rng=False)
    samples = load_detection_samples(data)[8:15]
    loader = torch.utils.data.DataLoader(
        samples, batch_size=1, sampler=InferenceSampler(samples), collate_fn=collate_fn
    )
    single = evaluate(model, loader, "cpu", num_threads=1, losses=True, progress=False)
    multi = reports[0]["bn_coco"]
    assert single["bbox"]["AP"] > 0  # not vacuous: the detector finds pedestrians
    # Exactly equal: the same model on the same images, one image per batch either way.
    assert {k: v for k, v in single.items() if k != "losses"} == {
        k: v for k, v in multi.items() if k != "losses"
    }
    # The losses: one image per batch, seeded by its id, so the same per image; averaged
    # over the 7 images (summed in another order across processes).
    assert single["losses"].keys() == multi["losses"].keys()
    for name, value in single["losses"].items():
        assert value == pytest.approx(multi["losses"][name], rel=1e-12, abs=1e-12), name


def test_saving_a_checkpoint_gives_every_rank_the_saved_buffers(two_process_run):
    _, out, reports, _ = two_process_run
    before = [r["bn_before_save"] for r in reports]
    assert not _buffers_equal(before[0], before[1])  # the second epoch drifted them apart
    checkpoint = torch.load(out / "batchnorm_1.pt", weights_only=True)
    saved = {k: v for k, v in checkpoint["model"].items() if k in before[0]}
    assert _buffers_equal(saved, before[0])
    assert all(_buffers_equal(r["bn_after_save"], saved) for r in reports)


def test_checkpoint_keeper_under_two_processes_follows_rank_0(two_process_run):
    _, out, reports, _ = two_process_run
    # Rank 0 saw AP 0.2, 0.3, 0.25 (rank 1 was told 0.7, 0.8, 0.75): best epoch 1, then
    # one evaluation without improvement stops the run (patience 1), on both ranks.
    expected = [(0, 0.2, False), (1, 0.3, False), (1, 0.3, True)]
    assert [r["keeper"] for r in reports] == [expected, expected]
    kept = out / "kept"
    assert sorted(p.name for p in kept.iterdir()) == ["best.pt", "checkpoint_002.pt"]
    best = torch.load(kept / "best.pt", weights_only=True)
    assert best["epoch"] == 1
    assert best["extra"]["checkpoint_keeper"]["best_value"] == 0.3
