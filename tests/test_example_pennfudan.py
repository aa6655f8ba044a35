"""The PennFudan example end to end: a shortened demo, predict.py, --resume, and --download."""

import hashlib
import io
import json
import zipfile

import common
import numpy as np
import predict
import pytest
import reports
import torch
import train
from PIL import Image
from pycocotools.coco import COCO

from detkit.engine import warmup_factor_at
from detkit.files import write_json

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
    # StepLR decays after every epoch: the optimizer's rate after an epoch is not the one
    # the epoch's steps applied.
    result = train.main(tiny_demo(tmp_path, "--lr-step-size", "1"))
    return tmp_path, result


def steps_per_epoch(tmp_path) -> int:
    """Optimizer steps in an epoch of the tiny demo (its data already written)."""
    args = train.parse_args(tiny_demo(tmp_path))
    train_loader, *_ = train.make_loaders(args, tmp_path / "data", False)
    return len(train_loader)


def demo_lr(epoch: int, step: int) -> float:
    """The rate the demo's ``step``-th step of ``epoch`` applies: 0.02, decayed 10x per epoch
    (StepLR, step size 1), times the warmup over the demo's first 100 steps."""
    return 0.02 * 0.1**epoch * warmup_factor_at(step, 100)


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
    # The rate the epoch's last step applied, warmup included (not the decayed 0.002 the
    # optimizer holds after the epoch, nor the un-warmed 0.02).
    last_step = steps_per_epoch(tmp_path) - 1
    assert epoch["lr"] == pytest.approx(demo_lr(0, last_step), rel=1e-12)
    # Validation losses of the Mask R-CNN, their sum first.
    val_losses = epoch["val_losses"]
    assert list(val_losses) == [
        "loss", "loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness",
        "loss_rpn_box_reg",
    ]  # fmt: skip
    assert val_losses["loss"] == pytest.approx(sum(list(val_losses.values())[1:]))
    assert all(np.isfinite(v) and v >= 0 for v in val_losses.values())
    assert epoch == json.loads(json.dumps(result["epochs"][0]))
    state = torch.load(run / "checkpoint_000.pt", weights_only=True)
    assert state["epoch"] == 0 and state["config"]["model"] == "lite:mobilenet_v3_large"
    # The best epoch by the Mask R-CNN's default metric, and its checkpoint.
    assert metrics["best"] == {
        "metric": "segm/AP", "mode": "max", "epoch": 0, "value": epoch["segm"]["AP"],
        "checkpoint": "best.pt",
    }  # fmt: skip
    assert metrics["stopped_early_at"] is None
    assert torch.load(run / "best.pt", weights_only=True)["epoch"] == 0
    # The training curves beside metrics.json, written atomically (no temporary file left).
    with Image.open(run / "curves.png") as curves:
        assert curves.format == "PNG" and curves.width > 600
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]
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


def test_metrics_json_holds_ap_intervals_and_operating_points(demo_run):
    tmp_path, _ = demo_run
    run = tmp_path / "run"
    (epoch,) = json.loads((run / "metrics.json").read_text())["epochs"]
    # Instances per test image, from the split train.py evaluated on.
    _, test_set = train.make_datasets(train.parse_args(tiny_demo(tmp_path)), tmp_path / "data")
    instances = sum(len(test_set[i][1]["boxes"]) for i in range(len(test_set)))
    for iou_type in ("bbox", "segm"):
        stats = epoch[iou_type]
        for name in ("AP", "AP50"):
            low, high = stats[f"{name}_interval"]
            assert 0.0 <= low <= high <= 1.0
        points = epoch["operating_points"][iou_type]
        assert points["iou_type"] == iou_type and points["iou"] == 0.5
        (person,) = points["classes"].values()
        assert list(points["classes"]) == ["1"]
        assert person["num_ground_truth"] == instances
        assert person["ap"] == pytest.approx(stats["AP50"])  # AP at IoU 0.5 is COCO's AP50
        assert 0.0 <= person["recall"] <= 1.0
    # The best epoch's points, for predict.py --thresholds, and its pictures.
    saved = json.loads((run / "operating_points.json").read_text())
    assert saved == {"epoch": 0, "operating_points": epoch["operating_points"]}
    for name in ("pr_curves.png", "confusion.png"):
        with Image.open(run / name) as picture:
            assert picture.format == "PNG"


def test_predict_reads_the_operating_points_train_wrote(demo_run):
    tmp_path, _ = demo_run
    path = tmp_path / "run" / "operating_points.json"
    classes = json.loads(path.read_text())["operating_points"]["bbox"]["classes"]
    expected = {int(k): v["threshold"] for k, v in classes.items() if v["threshold"] is not None}
    assert predict.read_thresholds(path) == expected
    image = sorted((tmp_path / "data" / "PNGImages").glob("*.png"))[0]
    out = tmp_path / "predict-thresholds"
    predict.main([
        "--checkpoint", str(tmp_path / "run" / "best.pt"), "--images", str(image),
        "--output-dir", str(out), "--thresholds", str(path),
    ])  # fmt: skip
    assert (out / image.name).is_file()


def test_the_epoch_line_gives_ap_with_its_interval(caplog):
    keeper = type("Keeper", (), {"metric": "bbox/AP", "best_value": 0.612, "best_epoch": 3})
    stats = {"AP": 0.612, "AP50": 0.9, "AP_interval": [0.571, 0.65], "AP50_interval": [0.8, 1.0]}
    record = {"epoch": 3, "seconds": 12.0, "bbox": stats}
    with caplog.at_level("INFO", logger="pennfudan"):
        reports.log_epoch(record, keeper, 0.95)
        reports.log_epoch({**record, "bbox": {"AP": 0.612, "AP50": 0.9}}, keeper, None)
    assert caplog.messages == [
        "epoch 3 done in 12 s: bbox AP 0.612 [0.571, 0.650] AP50 0.900 [0.800, 1.000] "
        "(95% bootstrap over images) (best bbox/AP 0.6120 at epoch 3)",
        "epoch 3 done in 12 s: bbox AP 0.612 AP50 0.900 (best bbox/AP 0.6120 at epoch 3)",
    ]


def test_without_matplotlib_the_analysis_plots_are_skipped_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(reports, "can_plot", lambda: False)
    plots = reports.AnalysisPlots(tmp_path)
    with caplog.at_level("INFO", logger="pennfudan"):
        assert plots.write(None, None) is False
        assert plots.write(None, None) is False
    assert caplog.messages == [
        "pr_curves.png and confusion.png not drawn: matplotlib is not installed "
        '(pip install "torch-detkit[plot]")'
    ]
    assert not list(tmp_path.iterdir())


def test_resume_continues_rotates_and_stops_early(demo_run, tmp_path, capsys):
    source, _ = demo_run
    run = tmp_path / "run"
    run.mkdir()
    for name in ("checkpoint_000.pt", "metrics.json"):
        (run / name).write_bytes((source / "run" / name).read_bytes())
    # num_images never improves after its first value: with patience 1, epoch 1 is the best
    # and epoch 2 ends the run, although --epochs asks for 4.
    argv = tiny_demo(
        tmp_path, "--epochs", "4", "--resume", "last", "--num-pictures", "0",
        "--keep-last", "1", "--best-metric", "num_images", "--early-stop", "1",
    )  # fmt: skip
    argv[argv.index("--data-root") + 1] = str(source / "data")
    result = train.main(argv)
    assert [e["epoch"] for e in result["epochs"]] == [0, 1, 2]
    metrics = json.loads((run / "metrics.json").read_text())
    assert (
        metrics["epochs"][0]
        == json.loads((source / "run" / "metrics.json").read_text())["epochs"][0]
    )
    assert all("val_losses" in e for e in metrics["epochs"])
    steps = steps_per_epoch(source)
    assert [e["lr"] for e in metrics["epochs"][1:]] == pytest.approx(
        [demo_lr(1, 2 * steps - 1), demo_lr(2, 3 * steps - 1)], rel=1e-12
    )
    assert metrics["best"] == {
        "metric": "num_images", "mode": "max", "epoch": 1, "value": 4.0, "checkpoint": "best.pt",
    }  # fmt: skip
    assert metrics["stopped_early_at"] == 2
    # The last checkpoint and the best are kept; the resumed-from one was rotated out.
    assert sorted(p.name for p in run.glob("*.pt")) == ["best.pt", "checkpoint_002.pt"]
    assert torch.load(run / "best.pt", weights_only=True)["epoch"] == 1
    err = capsys.readouterr().err
    assert "ranked by segm/AP, now by num_images: the best starts afresh" in err
    assert "early stop: num_images has not improved for 1 epochs; best.pt is epoch 1" in err

    # Resumed again from where it stopped: nothing more to train.
    result = train.main(argv)
    assert [e["epoch"] for e in result["epochs"]] == [0, 1, 2]
    assert "this run stopped early at epoch 2 (best: epoch 1)" in capsys.readouterr().err


def resume_without_training(demo_run, tmp_path, metrics: bytes | None):
    """--resume last from the demo's epoch-0 checkpoint with --epochs 1: no epoch left to run."""
    source, _ = demo_run
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint_000.pt").write_bytes((source / "run" / "checkpoint_000.pt").read_bytes())
    if metrics is not None:
        (run / "metrics.json").write_bytes(metrics)
    argv = tiny_demo(tmp_path, "--resume", "last", "--num-pictures", "0")
    argv[argv.index("--data-root") + 1] = str(source / "data")
    return run, train.main(argv)


def test_without_matplotlib_the_curves_are_skipped_once_with_the_reason(
    tmp_path, monkeypatch, caplog
):
    find_spec = reports.importlib.util.find_spec
    monkeypatch.setattr(
        reports.importlib.util,
        "find_spec",
        lambda name, *args: None if name == "matplotlib" else find_spec(name, *args),
    )
    curves = reports.TrainingCurves(tmp_path / "curves.png")
    history = [{"epoch": 0, "lr": 0.02, "losses": {"loss": 1.0}}]
    with caplog.at_level("INFO", logger="pennfudan"):
        assert curves.write(history) is None
        assert curves.write(history) is None
    assert caplog.messages == [
        'curves.png not drawn: matplotlib is not installed (pip install "torch-detkit[plot]")'
    ]
    assert not list(tmp_path.iterdir())


def test_audit_names_the_bad_file_and_exits_1(tmp_path, capsys):
    # Clean data: both splits pass, pictures drawn, nothing trained.
    argv = tiny_demo(tmp_path, "--audit")
    status, out, err = cli_with_output(capsys, train.main, argv)
    assert status == 0, err
    assert out.count("no problems: every sample follows the target contract") == 2
    assert "== train split ==" in out and "== test split ==" in out
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == ["audit.png", "audit_test.png"]
    with Image.open(run / "audit.png") as picture:
        assert picture.format == "PNG"

    # One mask that does not fit its image: the report names the file, the status is 1.
    masks = sorted((tmp_path / "data" / "PedMasks").glob("*.png"))
    bad = masks[5]
    Image.new("L", (8, 8)).save(bad)
    status, out, err = cli_with_output(capsys, train.main, argv)
    assert status == 1, err
    image = tmp_path / "data" / "PNGImages" / bad.name.replace("_mask", "")
    problems = [line for line in out.splitlines() if str(bad) in line]
    assert len(problems) == 1
    assert f"('{image}')" in problems[0]  # named once, by the dataset's own error
    assert "8x8 (WxH)" in problems[0]
    assert out.count("1 problem(s) in 1 sample(s):") == 1
    assert out.count("no problems: every sample follows the target contract") == 1
    assert "1 problem(s) found: fix or remove those samples before training" in err
    assert not list(run.glob("*.pt"))


def test_resume_survives_a_damaged_metrics_file(demo_run, tmp_path, capsys):
    damaged = b'{"config": {}, "epochs": [{"epoch": 0, "loss'  # cut off by a full disk
    run, result = resume_without_training(demo_run, tmp_path, damaged)
    assert result["epochs"] == []
    (aside,) = run.glob("metrics.json.corrupt-*")
    assert aside.read_bytes() == damaged  # kept, not lost
    assert not (run / "metrics.json").exists()
    err = capsys.readouterr().err  # main's logging.basicConfig(force=True) replaces caplog's
    assert f"{run / 'metrics.json'} is damaged (Unterminated string" in err
    assert f"moved it to {aside}; starting a fresh metrics history" in err


def test_resume_survives_a_missing_metrics_file(demo_run, tmp_path, capsys):
    _, result = resume_without_training(demo_run, tmp_path, None)
    assert result["epochs"] == []
    assert "metrics.json not found: starting a fresh metrics history" in capsys.readouterr().err


def test_metrics_json_is_written_atomically(demo_run, tmp_path, monkeypatch):
    import errno

    path = tmp_path / "metrics.json"
    path.write_text('{"epochs": []}')

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(common.os, "fsync", no_space)
    with pytest.raises(OSError, match=r"No space left on device: '.*metrics\.json'"):
        write_json(path, {"epochs": [{"epoch": 0}]})
    monkeypatch.undo()
    assert path.read_text() == '{"epochs": []}'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


# -- ordinary mistakes: one line on stderr, exit status 2; bugs keep their traceback --------------


def cli(capsys, main, argv):
    """``run_cli``'s exit status and stderr (argparse's own exit included)."""
    try:
        status = common.run_cli(main, argv)
    except SystemExit as exit:
        status = exit.code
    return status, capsys.readouterr().err


def cli_with_output(capsys, main, argv):
    """``run_cli``'s exit status, stdout and stderr."""
    status = common.run_cli(main, argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_line(err, *parts):
    """The error is the last line of stderr, alone (log lines of the run may precede it)."""
    assert err.endswith("\n") and "Traceback" not in err, err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert errors == [err.splitlines()[-1]], err
    for part in parts:
        assert part in errors[0], err


def test_bad_data_root_is_one_line_and_status_2(tmp_path, capsys):
    argv = ["--data-root", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "run")]
    status, err = cli(capsys, train.main, argv)
    assert status == 2
    assert_one_line(err, "error: no Penn-Fudan data at", str(tmp_path / "nowhere"))


def test_unwritable_output_dir_is_one_line_and_status_2(tmp_path, capsys, monkeypatch):
    (tmp_path / "taken").write_text("a file")
    status, err = cli(
        capsys, train.main, tiny_demo(tmp_path, "--output-dir", str(tmp_path / "taken"))
    )
    assert status == 2
    assert_one_line(err, f"--output-dir '{tmp_path / 'taken'}' is a file, not a folder")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(common.tempfile, "TemporaryFile", refuse)
    status, err = cli(capsys, train.main, tiny_demo(tmp_path))
    assert status == 2
    assert_one_line(err, f"--output-dir '{tmp_path / 'run'}' is not writable: Permission denied")


def test_bad_resume_file_is_one_line_and_status_2(demo_run, tmp_path, capsys):
    source, _ = demo_run
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    for resume, expected in [
        (junk, f"--resume: cannot read checkpoint '{junk}' safely"),
        (tmp_path / "missing.pt", "--resume: no checkpoint file"),
        (tmp_path, "is a directory, not a checkpoint file"),
    ]:
        argv = tiny_demo(tmp_path, "--resume", str(resume))
        argv[argv.index("--data-root") + 1] = str(source / "data")
        status, err = cli(capsys, train.main, argv)
        assert status == 2
        assert_one_line(err, expected)


def test_a_best_metric_the_evaluation_lacks_is_one_line_before_training(tmp_path, capsys):
    status, err = cli(capsys, train.main, tiny_demo(tmp_path, "--best-metric", "keypoints/AP"))
    assert status == 2
    assert_one_line(
        err,
        "--best-metric 'keypoints/AP': the evaluation gives num_images, bbox, segm, losses, "
        "not 'keypoints'; e.g. --best-metric segm/AP",
    )
    assert "Epoch: [0]" not in err and not list((tmp_path / "run").glob("*.pt"))
    argv = tiny_demo(tmp_path, "--best-metric", "losses/loss", "--no-val-loss")
    status, err = cli(capsys, train.main, argv)
    assert status == 2
    assert_one_line(err, "(the validation loss is off: drop --no-val-loss)")


def test_bad_arguments_are_one_line_and_status_2(tmp_path, capsys):
    status, err = cli(capsys, train.main, tiny_demo(tmp_path, "--batch-size", "0"))
    assert status == 2
    assert_one_line(err, "argument --batch-size: must be at least 1, got 0 (see --help)")
    status, err = cli(capsys, train.main, ["--epochs", "many"])
    assert status == 2
    assert_one_line(err, "argument --epochs: invalid positive_int value: 'many'")
    # A percentage where a score is meant would draw no detection in the pictures.
    status, err = cli(capsys, train.main, tiny_demo(tmp_path, "--score-threshold", "62"))
    assert status == 2
    assert_one_line(err, "argument --score-threshold: must be a score in 0..1, got 62")


def test_a_full_disk_is_one_line_but_a_bug_keeps_its_traceback(tmp_path, capsys, monkeypatch):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "data" / "x.png"))

    monkeypatch.setattr(train, "prepare_data", full)
    status, err = cli(capsys, train.main, tiny_demo(tmp_path))
    assert status == 2
    assert_one_line(err, "[Errno 28] No space left on device:", "x.png")

    def bug(*args, **kwargs):
        raise KeyError("a programming error")

    monkeypatch.setattr(train, "prepare_data", bug)
    with pytest.raises(KeyError, match="a programming error"):
        common.run_cli(train.main, tiny_demo(tmp_path))


def test_predict_skips_unreadable_files_and_writes_the_rest(
    demo_run, tmp_path, monkeypatch, capsys
):
    source, _ = demo_run
    images = tmp_path / "images"
    images.mkdir()
    good = sorted((source / "data" / "PNGImages").glob("*.png"))[:2]
    for path in good:
        (images / path.name).write_bytes(path.read_bytes())
    (images / "notes.png").write_text("not an image")
    (images / "folder.png").mkdir()
    Image.new("RGB", (130, 100)).save(images / "big.png")  # 1x-2x PIL's limit: PIL only warns
    Image.new("RGB", (200, 200)).save(images / "bomb.png")  # over 2x: PIL raises on open
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    out = tmp_path / "out"
    argv = ["--checkpoint", str(source / "run" / "checkpoint_000.pt"), "--output-dir", str(out),
            "--score-threshold", "0", "--images", str(images), str(tmp_path / "gone.png")]  # fmt: skip
    status = common.run_cli(predict.main, argv)
    assert status == 0
    skipped = {
        "big.png": "130x100 = 13000 pixels is more than PIL's limit of 10000",
        "bomb.png": "could be decompression bomb",
        "folder.png": "it is a directory, not an image file",
        "notes.png": "cannot identify image file",
        "gone.png": "No such file or directory",
    }
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("skipping")]
    assert len(lines) == len(skipped)
    for name, reason in skipped.items():
        (line,) = [m for m in lines if f"/{name}'" in m]
        assert reason in line and "\n" not in line
    meta = json.loads((out / "images.json").read_text())
    assert [m["file_name"] for m in meta] == [p.name for p in good]
    assert sorted(p.name for p in out.glob("*.png")) == [p.name for p in good]
    assert isinstance(json.loads((out / "results.json").read_text()), list)


def test_predict_bad_checkpoint_is_one_line(tmp_path, capsys):
    (tmp_path / "x.pt").write_text("junk")
    argv = ["--checkpoint", str(tmp_path / "x.pt"), "--images", str(tmp_path),
            "--output-dir", str(tmp_path / "out")]  # fmt: skip
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    status, err = cli(capsys, predict.main, argv)
    assert status == 2
    assert_one_line(err, "--checkpoint: cannot read checkpoint", "x.pt' safely")


def test_missing_data_says_what_to_do(tmp_path):
    with pytest.raises(common.UserError, match="--download"):
        common.prepare_data(tmp_path / "PennFudanPed")


def test_a_killed_synthetic_write_leaves_no_dataset_a_later_run_would_reuse(tmp_path, monkeypatch):
    real = common.write_synthetic_pennfudan

    def killed(root, num_images, **kwargs):  # dies after writing some of the images
        real(root, 2, **kwargs)
        raise KeyboardInterrupt

    root = tmp_path / "PennFudanPed"
    monkeypatch.setattr(common, "write_synthetic_pennfudan", killed)
    with pytest.raises(KeyboardInterrupt):
        common.prepare_data(root, synthetic=5, size_range=(40, 60))
    assert not (root / "PNGImages").exists()  # the next run writes the data again
    monkeypatch.setattr(common, "write_synthetic_pennfudan", real)
    assert common.prepare_data(root, synthetic=5, size_range=(40, 60)) == root
    assert len(list((root / "PNGImages").iterdir())) == 5
    assert len(list((root / "PedMasks").iterdir())) == 5
    assert [p.name for p in tmp_path.iterdir()] == ["PennFudanPed"]  # nothing left beside it


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


def test_an_archive_in_place_is_verified_before_extraction(served, tmp_path):
    good = pennfudan_zip()
    served(good)
    # Another archive where the download would go (a damaged or different file): it must not
    # be extracted; a fresh download replaces it.
    other = zip_bytes({"PennFudanPed/PNGImages/Impostor.png": b"x"})
    (tmp_path / "PennFudanPed.zip").write_bytes(other)
    root = common.prepare_data(tmp_path / "PennFudanPed", download=True)
    assert sorted(p.name for p in (root / "PNGImages").iterdir()) == ["FudanPed00001.png"]
    assert (tmp_path / "PennFudanPed.zip").read_bytes() == good


def test_an_archive_in_place_that_fails_its_checksum_offline_is_not_extracted(
    http_server, monkeypatch, tmp_path
):
    base, _ = http_server  # serves nothing: as good as offline
    good = pennfudan_zip()
    monkeypatch.setattr(common, "PENNFUDAN_URLS", (f"{base}/PennFudanPed.zip",))
    monkeypatch.setattr(common, "PENNFUDAN_MD5", hashlib.md5(good).hexdigest())
    (tmp_path / "PennFudanPed.zip").write_bytes(good[:-10])
    with pytest.raises(common.UserError, match=r"was already there but does not match \(md5"):
        common.prepare_data(tmp_path / "PennFudanPed", download=True)
    assert not (tmp_path / "PennFudanPed").exists()
    # And a verified archive in place is extracted without any request.
    (tmp_path / "PennFudanPed.zip").write_bytes(good)
    root = common.prepare_data(tmp_path / "PennFudanPed", download=True)
    assert (root / "PNGImages" / "FudanPed00001.png").is_file()


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
    with pytest.raises(common.UserError) as info:
        common.prepare_data(tmp_path / "PennFudanPed", download=True)
    message = str(info.value)
    assert f"{urls[0]} failed: HTTP 404" in message
    assert f"{urls[1]}: md5 mismatch" in message
    assert "--demo" in message
    assert list(tmp_path.iterdir()) == []


def test_download_bad_checksum(served, tmp_path):
    served(pennfudan_zip(), md5="0" * 32)
    with pytest.raises(common.UserError, match="md5 mismatch"):
        common.prepare_data(tmp_path / "PennFudanPed", download=True)
    assert list(tmp_path.iterdir()) == []


def test_download_zip_slip_refused(served, tmp_path):
    served(zip_bytes({"PennFudanPed/a.txt": b"a", "../escaped.txt": b"evil"}))
    with pytest.raises(common.UserError, match="would land outside the target folder"):
        common.prepare_data(tmp_path / "data" / "PennFudanPed", download=True)
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "data" / "PennFudanPed").exists()


def test_download_truncated_transfer(served, tmp_path):
    body = pennfudan_zip()
    served(body[:50], headers={"Content-Length": str(len(body))})
    with pytest.raises(common.UserError, match="cut short"):
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
    argv = tiny_demo(tmp_path, "--test-size", "5", "--num-pictures", "1", "--no-val-loss")
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(script), *argv],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (epoch,) = json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"]
    assert epoch["num_images"] == 5  # 5 test images over 2 ranks: none dropped, none doubled
    assert "val_losses" not in epoch
    assert torch.load(tmp_path / "run" / "checkpoint_000.pt", weights_only=True)["epoch"] == 0
    assert torch.load(tmp_path / "run" / "best.pt", weights_only=True)["epoch"] == 0


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
