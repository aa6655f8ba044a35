"""MetricLogger and SmoothedValue: statistics, tutorial-style lines, progress bar."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import statistics

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

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


def test_progress_bar_on_a_terminal_only():
    stream = TTY()
    metric_logger = MetricLogger(stream=stream)
    for _ in metric_logger.log_every(range(7), print_freq=100, header="Epoch: [3]"):
        metric_logger.update(loss=0.25)
    out = stream.getvalue()
    assert "\r" in out and out.endswith("\n")
    final = out.rstrip("\n").split("\r")[-1].replace("\x1b[2K", "")
    assert re.match(r"Epoch: \[3\] 100%\|#{25}\| 7/7 \[.*it/s\] loss: 0\.2500$", final), final

    plain = io.StringIO()  # not a terminal: no bar
    for _ in MetricLogger(stream=plain).log_every(range(3)):
        pass
    assert plain.getvalue() == ""


def test_progress_bar_without_a_length():
    stream = TTY()
    for _ in MetricLogger(stream=stream).log_every(iter(range(4)), header="Test:"):
        pass
    assert re.search(r"Test: 4 it \[", stream.getvalue())


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


def test_progress_bar_line_ends_when_the_loop_stops_early():
    stream = TTY()
    batches = MetricLogger(stream=stream).log_every(range(10), header="Epoch: [0]")
    with pytest.raises(RuntimeError, match="boom"), contextlib.closing(batches):
        for i in batches:
            if i == 2:
                raise RuntimeError("boom")
    assert stream.getvalue().endswith("\n") and "Epoch: [0]" in stream.getvalue()
