"""MetricLogger and SmoothedValue: statistics, tutorial-style lines, progress bar."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import detkit
import detkit.console as console
import detkit.engine.logger as logger_module
from detkit.data import collate_fn
from detkit.engine import MetricLogger, SmoothedValue, train_one_epoch

finite = st.floats(-1e6, 1e6, allow_nan=False)


@given(values=st.lists(finite, min_size=1, max_size=40), window=st.integers(1, 25))
def test_smoothed_value_statistics(values, window):
    meter = SmoothedValue(window_size=window)
    for value in values:
        meter.update(value)
    recent = values[-window:]
    assert meter.median == statistics.median(recent)
    assert meter.avg == pytest.approx(statistics.fmean(recent), rel=1e-9, abs=1e-6)
    assert meter.global_avg == pytest.approx(statistics.fmean(values), rel=1e-9, abs=1e-6)
    assert meter.max == max(recent)
    assert meter.value == values[-1]
    assert meter.count == len(values)


def test_smoothed_value_takes_tensors_and_counts():
    meter = SmoothedValue(fmt="{value:.2f}")
    meter.update(torch.tensor(2.0), n=3)
    meter.update(1.0)
    assert meter.global_avg == pytest.approx(7 / 4)
    assert str(meter) == "1.00"
    assert str(SmoothedValue()) == "nan (nan)"
    with pytest.raises(ValueError, match="window_size"):
        SmoothedValue(window_size=0)


class TTY(io.StringIO):
    def isatty(self):
        return True


def test_log_every_lines_look_like_the_tutorials(caplog):
    metric_logger = MetricLogger(progress=False)
    metric_logger.add_meter("lr", SmoothedValue(window_size=1, fmt="{value:.6f}"))
    with caplog.at_level(logging.INFO, logger="detkit.engine"):
        for i in metric_logger.log_every(range(12), print_freq=5, header="Epoch: [0]"):
            metric_logger.update(lr=0.005, loss=1.0 + i, loss_classifier=0.5)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5  # iterations 0, 5, 10, the last one, then the total
    pattern = (
        r"Epoch: \[0\]  \[ 5/12\]  eta: \d+:\d\d:\d\d  lr: 0\.005000  "
        r"loss: 3\.5000 \(3\.5000\)  loss_classifier: 0\.5000 \(0\.5000\)  "
        r"time: \d+\.\d{4}  data: \d+\.\d{4}$"
    )
    assert re.match(pattern, lines[1]), lines[1]
    assert lines[2].startswith("Epoch: [0]  [10/12]")
    assert lines[3].startswith("Epoch: [0]  [11/12]")
    assert re.match(r"Epoch: \[0\] Total time: \d+:\d\d:\d\d \(\d+\.\d{4} s / it\)", lines[4])


def test_only_the_main_process_logs(caplog, monkeypatch):
    monkeypatch.setattr(logger_module, "is_main_process", lambda: False)
    stream = TTY()
    metric_logger = MetricLogger(stream=stream)
    with caplog.at_level(logging.INFO, logger="detkit.engine"):
        assert list(metric_logger.log_every(range(3), print_freq=1)) == [0, 1, 2]
        metric_logger.log("hello")
    assert caplog.records == []
    assert stream.getvalue() == ""


needs_tqdm = pytest.mark.skipif(
    importlib.util.find_spec("tqdm") is None, reason="tqdm (the progress extra) draws the bars"
)


@pytest.fixture
def verbose(caplog):
    """detkit's INFO records enabled, as they are by default without logging configuration."""
    caplog.set_level(logging.INFO, logger="detkit")
    return caplog


def bar_text(stream) -> str:
    """What a tqdm bar shows last in ``stream`` (tqdm pads a shorter line with spaces)."""
    return stream.getvalue().rstrip("\n").split("\r")[-1].rstrip()


@needs_tqdm
def test_a_tqdm_bar_on_a_terminal_only(verbose):
    stream = TTY()
    metric_logger = MetricLogger(stream=stream)
    for _ in metric_logger.log_every(range(7), print_freq=100, header="Epoch: [3]"):
        metric_logger.update(loss=0.25)
    assert stream.getvalue().endswith("\n")
    final = bar_text(stream)
    assert re.match(r"Epoch: \[3\]: 100%\|#+\| 7/7 \[.*it/s, loss: 0\.2500\]$", final), final
    # The log lines were written too, each once, while the bar was cleared.
    assert [r.getMessage()[:16] for r in verbose.records] == [
        "Epoch: [3]  [0/7",
        "Epoch: [3]  [6/7",
        "Epoch: [3] Total",
    ]

    plain = io.StringIO()  # not a terminal (a file, a pipe): the lines are the progress report
    for _ in MetricLogger(stream=plain).log_every(range(3)):
        pass
    assert plain.getvalue() == ""
    forced = io.StringIO()
    for _ in MetricLogger(stream=forced, progress=True).log_every(range(3), header="Test:"):
        pass
    assert re.match(r"Test: 100%\|#+\| 3/3 ", bar_text(forced))


def test_a_notebook_gets_the_bar_although_its_output_is_no_terminal(verbose, monkeypatch):
    shown = []

    class Widget:  # stands for tqdm.notebook.tqdm, which needs a running Jupyter kernel
        def __init__(self, **options):
            shown.append(options)

        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    monkeypatch.setattr(console, "_tqdm", lambda: (Widget, True))
    for _ in MetricLogger(stream=io.StringIO()).log_every(range(3), header="Test:"):
        pass
    assert [(o["total"], o["desc"]) for o in shown] == [(3, "Test")]


def test_without_tqdm_there_is_no_bar_and_the_lines_remain(verbose, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm raises ImportError
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    stream = TTY()
    for _ in MetricLogger(stream=stream, progress=True).log_every(range(3), header="Test:"):
        pass
    assert stream.getvalue() == ""
    assert len(verbose.records) == 3  # [0/3], [2/3], total time


def test_silenced_detkit_draws_no_bar(caplog):
    caplog.set_level(logging.WARNING, logger="detkit")
    stream = TTY()
    for _ in MetricLogger(stream=stream).log_every(range(3)):
        pass
    assert stream.getvalue() == ""
    assert caplog.records == []


@needs_tqdm
def test_progress_bar_without_a_length(verbose):
    stream = TTY()
    for _ in MetricLogger(stream=stream).log_every(iter(range(4)), header="Test:"):
        pass
    assert re.match(r"Test: 4it \[", bar_text(stream)), bar_text(stream)


def test_train_one_epoch_logs_through_logging(caplog):
    model = torch.nn.Linear(1, 1)

    class Losses(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, images, targets):
            out = self.model(torch.stack(images).view(-1, 1))
            return {"loss_a": out.pow(2).mean(), "loss_b": out.abs().mean()}

    wrapped = Losses()
    samples = [(torch.full((1,), float(i)), {"image_id": i}) for i in range(6)]
    loader = torch.utils.data.DataLoader(samples, batch_size=2, collate_fn=collate_fn)
    with caplog.at_level(logging.INFO, logger="detkit.engine"):
        train_one_epoch(
            wrapped,
            torch.optim.SGD(wrapped.parameters(), lr=0.01),
            loader,
            "cpu",
            7,
            print_freq=2,
            progress=False,
        )
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split("  ")[1] for line in lines[:-1]] == ["[0/3]", "[2/3]"]
    assert re.match(r"Epoch: \[7\]  \[0/3\]  eta: .*  lr: 0\.\d{6}  loss: .*  loss_a: ", lines[0])
    assert "Total time" in lines[-1]


@needs_tqdm
def test_progress_bar_line_ends_when_the_loop_stops_early(verbose):
    stream = TTY()
    batches = MetricLogger(stream=stream).log_every(range(10), header="Epoch: [0]")
    with pytest.raises(RuntimeError, match="boom"), contextlib.closing(batches):
        for i in batches:
            if i == 2:
                raise RuntimeError("boom")
    assert stream.getvalue().endswith("\n") and "Epoch: [0]" in stream.getvalue()
    assert re.search(r" 2/10 \[", bar_text(stream)), bar_text(stream)


# -- output without any logging configuration (issue 14) -----------------------------------------


@contextlib.contextmanager
def unconfigured():
    """No handler on the root logger, as in a script or notebook that never configured logging
    (pytest's capture handlers, attached to the root for each test phase, are put back)."""
    saved = logging.root.handlers[:]
    logging.root.handlers.clear()
    try:
        yield
    finally:
        logging.root.handlers[:] = saved
        detkit.set_verbosity(None)  # detaches detkit's handler again: the root has handlers
    assert logging.getLogger("detkit").handlers == []


def run_three(metric_logger: MetricLogger) -> None:
    for _ in metric_logger.log_every(range(3), print_freq=2, header="Epoch: [0]"):
        metric_logger.update(loss=1.0)


def test_lines_show_on_stdout_without_logging_configuration(capsys):
    with unconfigured():
        run_three(MetricLogger(progress=False))
        out, err = capsys.readouterr()
        logging.getLogger("detkit.data.download").warning("checksum mismatch")
        assert capsys.readouterr() == ("", "WARNING: checksum mismatch\n")
    assert [line[:17] for line in out.splitlines()] == [
        "Epoch: [0]  [0/3]",
        "Epoch: [0]  [2/3]",
        "Epoch: [0] Total ",
    ]
    assert err == ""


def test_an_application_configuring_logging_later_gets_each_line_once(capsys):
    with unconfigured():
        metric_logger = MetricLogger(progress=False)  # detkit's handler is attached now
        assert len(logging.getLogger("detkit").handlers) == 1
        application = io.StringIO()
        logging.root.addHandler(logging.StreamHandler(application))  # what basicConfig does
        run_three(metric_logger)  # in the middle of a loop: detkit's handler stays silent
        assert capsys.readouterr().out == ""
        assert application.getvalue().count("Epoch: [0]  [2/3]") == 1
        MetricLogger(progress=False)  # the next loop detaches it; the root's level applies
        assert logging.getLogger("detkit").handlers == []
        assert logging.getLogger("detkit").level == logging.NOTSET


def test_set_verbosity_silences_and_restores(capsys):
    with unconfigured():
        detkit.set_verbosity(logging.WARNING)
        run_three(MetricLogger(progress=False))
        logging.getLogger("detkit.engine").warning("still shown")
        assert capsys.readouterr() == ("", "WARNING: still shown\n")
        detkit.set_verbosity("info")
        run_three(MetricLogger(progress=False))
        assert capsys.readouterr().out.count("Epoch: [0]") == 3
    with pytest.raises(ValueError, match="'LOUD'"):
        detkit.set_verbosity("LOUD")
    with pytest.raises(TypeError, match="level"):
        detkit.set_verbosity(True)


TUTORIAL_LOOP = """
import logging, sys
import torch
sys.path.insert(0, sys.argv[1])
from strategies import synthetic_detection_samples, tiny_detector
import detkit
from detkit.data import collate_fn
from detkit.engine import evaluate, train_one_epoch

torch.set_num_threads(1)
torch.manual_seed(0)
mode = sys.argv[3]
if mode == "basicConfig":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
if mode == "quiet":
    detkit.set_verbosity(logging.WARNING)
samples = synthetic_detection_samples(sys.argv[2], num_images=2)
loader = torch.utils.data.DataLoader(samples, batch_size=2, collate_fn=collate_fn)
model = tiny_detector()
optimizer = torch.optim.SGD(model.parameters(), lr=0.001)
train_one_epoch(model, optimizer, loader, "cpu", 0)
if mode == "late":  # configured after detkit's handler was attached
    logging.basicConfig(level=logging.INFO, format="%(message)s")
train_one_epoch(model, optimizer, loader, "cpu", 1)
evaluate(model, loader, "cpu")
"""
EPOCH_LINE = re.compile(r"^Epoch: \[1\]  \[0/1\]  eta: .*  lr: 0\.001000  loss: ", re.MULTILINE)
TABLE_LINE = " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = "


@pytest.mark.parametrize("mode", ["unconfigured", "basicConfig", "late", "quiet"])
def test_the_tutorial_loop_prints_without_logging_configuration(mode, tmp_path):
    """A script (or notebook: stdout is no terminal either) running train_one_epoch and
    evaluate shows the epoch lines and the COCO table, once, unless silenced."""
    tests = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", TUTORIAL_LOOP, str(tests), str(tmp_path / "data"), mode],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out, err = done.stdout, done.stderr
    both = out + err
    if mode == "quiet":
        assert "Epoch" not in both and "Average Precision" not in both
        return
    assert len(EPOCH_LINE.findall(both)) == 1, both
    assert both.count("Epoch: [1] Total time: ") == 1
    assert both.count(TABLE_LINE) == 1
    assert both.count("IoU metric: bbox") == 1
    assert "Averaged stats: model_time: " in both
    if mode == "unconfigured":  # printed like the reference scripts' print(): on stdout
        assert EPOCH_LINE.search(out) and TABLE_LINE in out
        assert "Epoch: [0]  [0/1]" in out
    else:  # through the application's handler (stderr), not detkit's
        assert "Epoch: [1]" not in out and "Average Precision" not in out
        assert ("Epoch: [0]  [0/1]" in out) == (mode == "late")  # before basicConfig
