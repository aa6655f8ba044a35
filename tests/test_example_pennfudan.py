"""The PennFudan example end to end: a shortened demo, predict.py, --resume, and --download."""

import hashlib
import io
import json
import zipfile

import common
import numpy as np
import predict
import pytest
import torch
import train
from PIL import Image
from pycocotools.coco import COCO

STATS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def tiny_demo(tmp_path, *extra):
    """The demo, shortened: 16 tiny synthetic images, one epoch, small model inputs."""
    return [
        "--demo", "--synthetic", "16", "--synthetic-size", "64", "96", "--test-size", "4",
        "--epochs", "1", "--min-size", "96", "--max-size", "128", "--num-pictures", "3",
        "--output-dir", str(tmp_path / "run"), "--data-root", str(tmp_path / "data"), *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("demo")
    torch.manual_seed(0)
    result = train.main(tiny_demo(tmp_path))
    return tmp_path, result


def test_demo_writes_metrics_checkpoint_and_pictures(demo_run):
    tmp_path, result = demo_run
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["config"]["model"] == "lite:mobilenet_v3_large"
    (epoch,) = metrics["epochs"]
    assert epoch["epoch"] == 0 and epoch["num_images"] == 4
    for iou_type in ("bbox", "segm"):
        assert set(STATS) <= set(epoch[iou_type])
        assert all(-1.0 <= epoch[iou_type][s] <= 1.0 for s in STATS)
    assert epoch["losses"]["loss"] > 0 and np.isfinite(epoch["losses"]["loss"])
    assert epoch == json.loads(json.dumps(result["epochs"][0]))
    state = torch.load(run / "checkpoint_000.pt", weights_only=True)
    assert state["epoch"] == 0 and state["config"]["model"] == "lite:mobilenet_v3_large"
    pictures = sorted((run / "predictions").glob("*.png"))
    assert len(pictures) == 3
    assert Image.open(run / "predictions.png").mode == "RGB"


def test_predict_on_the_demo_checkpoint(demo_run):
    tmp_path, _ = demo_run
    out = tmp_path / "predict"
    images = tmp_path / "data" / "PNGImages"
    results = predict.main([
        "--checkpoint", str(tmp_path / "run" / "checkpoint_000.pt"), "--images", str(images),
        "--output-dir", str(out), "--score-threshold", "0",
    ])  # fmt: skip
    files = sorted(images.glob("*.png"))
    assert sorted(p.name for p in out.glob("*.png")) == [p.name for p in files]
    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    # The results load into pycocotools against a ground truth of the same images.
    meta = json.loads((out / "images.json").read_text())
    gt = COCO()
    gt.dataset = {"images": meta, "annotations": [], "categories": [{"id": 1, "name": "person"}]}
    gt.createIndex()
    if saved:
        detections = gt.loadRes(saved)
        assert set(detections.getImgIds()) <= {m["id"] for m in meta}
        assert all("segmentation" in r and r["bbox"][2] >= 0 for r in saved)


def test_resume_continues_from_the_saved_epoch(demo_run, tmp_path):
    source, _ = demo_run
    run = tmp_path / "run"
    run.mkdir()
    for name in ("checkpoint_000.pt", "metrics.json"):
        (run / name).write_bytes((source / "run" / name).read_bytes())
    argv = tiny_demo(tmp_path, "--epochs", "2", "--resume", "last", "--num-pictures", "0")
    argv[argv.index("--data-root") + 1] = str(source / "data")
    result = train.main(argv)
    assert [e["epoch"] for e in result["epochs"]] == [0, 1]
    assert (
        json.loads((run / "metrics.json").read_text())["epochs"][0]
        == json.loads((source / "run" / "metrics.json").read_text())["epochs"][0]
    )
    assert torch.load(run / "checkpoint_001.pt", weights_only=True)["epoch"] == 1


def test_missing_data_says_what_to_do(tmp_path):
    with pytest.raises(SystemExit, match="--download"):
        common.prepare_data(tmp_path / "PennFudanPed")


# -- --download against a local HTTP server -----------------------------------------------------


def zip_bytes(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def pennfudan_zip():
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    mask = io.BytesIO()
    Image.new("L", (8, 8)).save(mask, format="PNG")
    return zip_bytes({
        "PennFudanPed/PNGImages/FudanPed00001.png": png.getvalue(),
        "PennFudanPed/PedMasks/FudanPed00001_mask.png": mask.getvalue(),
    })  # fmt: skip


@pytest.fixture
def served(http_server, monkeypatch):
    base, routes = http_server

    def serve(body, *, md5=None, headers=None):
        routes["/PennFudanPed.zip"] = (body, headers) if headers else body
        monkeypatch.setattr(common, "PENNFUDAN_URLS", (f"{base}/PennFudanPed.zip",))
        monkeypatch.setattr(common, "PENNFUDAN_MD5", md5 or hashlib.md5(body).hexdigest())

    return serve


def test_download_good_zip(served, tmp_path):
    served(pennfudan_zip())
    root = common.prepare_data(tmp_path / "PennFudanPed", download=True)
    assert (root / "PNGImages" / "FudanPed00001.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["PennFudanPed", "PennFudanPed.zip"]


def test_download_falls_back_to_the_mirror(http_server, monkeypatch, tmp_path):
    base, routes = http_server
    body = pennfudan_zip()
    routes["/mirror/PennFudanPed.zip"] = body
    urls = (f"{base}/gone/PennFudanPed.zip", f"{base}/mirror/PennFudanPed.zip")
    monkeypatch.setattr(common, "PENNFUDAN_URLS", urls)
    monkeypatch.setattr(common, "PENNFUDAN_MD5", hashlib.md5(body).hexdigest())
    root = common.prepare_data(tmp_path / "PennFudanPed", download=True)
    assert (root / "PedMasks" / "FudanPed00001_mask.png").is_file()


def test_download_reports_every_failed_url(http_server, monkeypatch, tmp_path):
    base, routes = http_server
    routes["/bad/PennFudanPed.zip"] = b"not the archive"
    urls = (f"{base}/gone/PennFudanPed.zip", f"{base}/bad/PennFudanPed.zip")
    monkeypatch.setattr(common, "PENNFUDAN_URLS", urls)
    with pytest.raises(SystemExit) as info:
        common.prepare_data(tmp_path / "PennFudanPed", download=True)
    message = str(info.value)
    assert f"{urls[0]} failed: HTTP 404" in message
    assert f"{urls[1]}: md5 mismatch" in message
    assert "--demo" in message
    assert list(tmp_path.iterdir()) == []


def test_download_bad_checksum(served, tmp_path):
    served(pennfudan_zip(), md5="0" * 32)
    with pytest.raises(SystemExit, match="md5 mismatch"):
        common.prepare_data(tmp_path / "PennFudanPed", download=True)
    assert list(tmp_path.iterdir()) == []


def test_download_zip_slip_refused(served, tmp_path):
    served(zip_bytes({"PennFudanPed/a.txt": b"a", "../escaped.txt": b"evil"}))
    with pytest.raises(SystemExit, match="would land outside the target folder"):
        common.prepare_data(tmp_path / "data" / "PennFudanPed", download=True)
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "data" / "PennFudanPed").exists()


def test_download_truncated_transfer(served, tmp_path):
    body = pennfudan_zip()
    served(body[:50], headers={"Content-Length": str(len(body))})
    with pytest.raises(SystemExit, match="cut short"):
        common.prepare_data(tmp_path / "PennFudanPed", download=True)
    assert list(tmp_path.iterdir()) == []


def test_torchrun_two_processes_on_cpu(tmp_path):
    """``torchrun --nproc_per_node=2 train.py``: gloo, a shared split, each test image counted once."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(train.__file__)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    argv = tiny_demo(tmp_path, "--test-size", "5", "--num-pictures", "1")
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(script), *argv],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (epoch,) = json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"]
    assert epoch["num_images"] == 5  # 5 test images over 2 ranks: none dropped, none doubled
    assert torch.load(tmp_path / "run" / "checkpoint_000.pt", weights_only=True)["epoch"] == 0


@pytest.mark.parametrize("grouped", [True, False])
def test_every_epoch_reshuffles_the_distributed_sampler(grouped):
    """With or without aspect-ratio grouping, each epoch's order under torchrun is new."""
    from torch.utils.data import BatchSampler, DistributedSampler

    from detkit.data import GroupedBatchSampler

    sampler = DistributedSampler(range(40), num_replicas=2, rank=0, seed=0)
    batches = (
        GroupedBatchSampler(sampler, [0] * 40, 2) if grouped else BatchSampler(sampler, 2, False)
    )
    orders = []
    for epoch in range(3):
        common.set_epoch(batches, epoch)
        orders.append([i for batch in batches for i in batch])
    assert sampler.epoch == 2
    assert orders[0] != orders[1] != orders[2]
