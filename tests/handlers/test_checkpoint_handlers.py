"""``TrainingStateLoader`` resumes only an unfinished run (``monai_ext.handlers.checkpoint``).

A toy trainer: an ignite ``Engine`` whose step adds 1 to a one-weight network, with ``TrainingStateSaver`` writing
its state after every epoch. The outcome of a second run is then known without running anything else: it processes
``max_epochs * epoch_length - start`` iterations, where ``start`` is the saved iteration when the loader resumes and
0 when it starts over, and its weight is ``start weight + iterations`` (the saved weight when resumed, 0 when not).
"""

from __future__ import annotations

import logging

import pytest
import torch
from ignite.engine import Engine, Events

from monai_ext.handlers import TrainingStateLoader, TrainingStateSaver

EPOCH_LENGTH = 3


def _run(path, max_epochs: int, resume: bool = True, engine_key: str | None = "trainer", save: bool = True):
    """One run of the toy trainer; returns (iterations it processed, final weight, the loader)."""
    net = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(net.weight)
    steps = []

    def step(engine, batch):
        with torch.no_grad():
            net.weight += 1.0
        steps.append(engine.state.iteration)

    trainer = Engine(step)
    loader = TrainingStateLoader(path, {"model": net}, resume=resume, engine_key=engine_key)
    loader.attach(trainer)
    if save:
        TrainingStateSaver(path, {"model": net}, engine_key=engine_key).attach(trainer)
    trainer.run(range(EPOCH_LENGTH), max_epochs=max_epochs)
    return len(steps), float(net.weight.detach()), trainer


class _Killed(Exception):
    pass


def _first_run(path, epochs: int, stop_after: int | None = None, on_purpose: bool = False) -> None:
    """A run of ``epochs`` epochs, optionally interrupted after ``stop_after`` epochs: by a crash (an exception, as a
    kill or Ctrl-C: no ``TERMINATE`` event) or, ``on_purpose``, by ``engine.terminate()`` (as early stopping)."""
    net = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(net.weight)

    def step(engine, batch):
        with torch.no_grad():
            net.weight += 1.0

    trainer = Engine(step)
    TrainingStateSaver(path, {"model": net}).attach(trainer)
    def stop(engine):
        if on_purpose:
            engine.terminate()
        else:
            raise _Killed

    if stop_after is not None:
        trainer.add_event_handler(Events.EPOCH_COMPLETED(once=stop_after), stop)
    try:
        trainer.run(range(EPOCH_LENGTH), max_epochs=epochs)
    except _Killed:
        pass


# (first run: epochs, interrupted after; second run: max_epochs; resumed?)
CASES = [
    pytest.param(3, 1, 3, True, id="unfinished-resumes"),
    pytest.param(3, 2, 3, True, id="unfinished-at-last-epoch-resumes"),
    pytest.param(3, None, 3, False, id="finished-same-epochs-starts-over"),
    pytest.param(5, None, 2, False, id="finished-longer-run-starts-over"),
    pytest.param(2, None, 4, True, id="finished-shorter-run-is-continued-to-more-epochs"),
]


@pytest.mark.parametrize("epochs, stop_after, max_epochs, resumed", CASES)
def test_resumes_only_unfinished_runs(tmp_path, epochs, stop_after, max_epochs, resumed, caplog):
    path = tmp_path / "checkpoint.pt"
    _first_run(path, epochs, stop_after)
    saved = torch.load(path, weights_only=True)
    saved_iteration, saved_weight = saved["trainer"]["iteration"], float(saved["model"]["weight"])
    assert saved_iteration == (stop_after or epochs) * EPOCH_LENGTH == saved_weight

    with caplog.at_level(logging.INFO):
        n, weight, trainer = _run(path, max_epochs)
    start = saved_iteration if resumed else 0
    assert n == max_epochs * EPOCH_LENGTH - start
    assert weight == (saved_weight if resumed else 0.0) + n
    assert trainer.state.epoch == max_epochs
    if not resumed:
        assert "finished run" in caplog.text and "new run starts from epoch 0" in caplog.text
    # the new run's own state replaced the old one: a third run with the same epochs trains again from 0
    n3, weight3, _ = _run(path, max_epochs)
    assert (n3, weight3) == (max_epochs * EPOCH_LENGTH, max_epochs * EPOCH_LENGTH)


def test_a_run_stopped_on_purpose_is_finished(tmp_path, caplog):
    """terminate() (e.g. MONAI's EarlyStopHandler) marks the state: the next run starts over instead of resuming."""
    path = tmp_path / "checkpoint.pt"
    _first_run(path, 3, stop_after=1, on_purpose=True)
    saved = torch.load(path, weights_only=True)
    assert saved["run_status"] == {"terminated": True, "epoch": 1} and saved["trainer"]["iteration"] == EPOCH_LENGTH
    with caplog.at_level(logging.INFO):
        n, weight, _ = _run(path, 3)
    assert (n, weight) == (3 * EPOCH_LENGTH, 3.0 * EPOCH_LENGTH)  # from epoch 0, nothing loaded
    assert "stopped on purpose at epoch 1" in caplog.text


def test_missing_file_and_resume_false_start_from_zero(tmp_path):
    path = tmp_path / "checkpoint.pt"
    assert _run(path, 2)[:2] == (2 * EPOCH_LENGTH, 2.0 * EPOCH_LENGTH)
    _first_run(path, 3, stop_after=1)  # unfinished, yet ignored
    assert _run(path, 3, resume="false", save=False)[:2] == (3 * EPOCH_LENGTH, 3.0 * EPOCH_LENGTH)


def test_without_engine_state_loads_as_monai(tmp_path):
    """No engine state in the file (``engine_key=None``): the run cannot be judged, the weights are loaded."""
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": {"weight": torch.full((1, 1), 7.0)}}, path)
    n, weight, _ = _run(path, 2, engine_key=None, save=False)
    assert (n, weight) == (2 * EPOCH_LENGTH, 7.0 + 2 * EPOCH_LENGTH)


def test_legacy_format_checkpoint_is_judged_too(tmp_path):
    """A checkpoint in torch's legacy (non-zip) format cannot be memory-mapped; it is read normally."""
    path = tmp_path / "checkpoint.pt"
    state = {"model": {"weight": torch.full((1, 1), 5.0)},
             "trainer": {"iteration": 2 * EPOCH_LENGTH, "epoch_length": EPOCH_LENGTH, "max_epochs": 2}}
    torch.save(state, path, _use_new_zipfile_serialization=False)
    assert _run(path, 2, save=False)[:2] == (2 * EPOCH_LENGTH, 2.0 * EPOCH_LENGTH)  # finished: not loaded
    assert _run(path, 3, save=False)[:2] == (EPOCH_LENGTH, 5.0 + EPOCH_LENGTH)  # more epochs: continued
