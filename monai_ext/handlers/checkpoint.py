"""Checkpoint handlers for exact resume: the training state in one atomically written file, and a best-model saver
whose key-metric history can be saved with it.

MONAI's ``CheckpointSaver`` writes interval checkpoints under a new name each time (``checkpoint_epoch=N.pt``) and
non-atomically, so a run killed while saving can leave a truncated newest file, and a restarted run has to search for
the latest one. :class:`TrainingStateSaver` writes the whole training state (model, optimiser, scheduler, trainer
and anything else with a ``state_dict``) to one fixed file with a temporary file and ``os.replace``, so the file on
disk is always complete; MONAI's ``CheckpointLoader`` loads it back. :class:`ResumableCheckpointSaver` is MONAI's
``CheckpointSaver`` plus the ``state_dict`` it lacks, so that the best-model saver's history (the best key metric so
far) is part of that state and a resumed run keeps the same best model as an uninterrupted one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from monai.handlers import CheckpointLoader, CheckpointSaver
from monai.utils import min_version, optional_import
from torch.nn.parallel import DataParallel, DistributedDataParallel

from monai_ext.utils.bundle import as_bool
from monai_ext.utils.checkpoint import save_checkpoint

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")

__all__ = ["ResumableCheckpointSaver", "TrainingStateLoader", "TrainingStateSaver"]


class ResumableCheckpointSaver(CheckpointSaver):
    """MONAI's :class:`~monai.handlers.CheckpointSaver` with a ``state_dict()`` of its key-metric tracking list.

    MONAI's saver can *load* that list (``load_state_dict``) but only saves it inside the best-model file
    (``key_metric_save_state=True``), which then is no longer a bare ``state_dict`` of the network. This subclass
    exposes the list so that :class:`TrainingStateSaver` can store it next to the optimiser state, while
    ``models/model.pt`` stays the bare network weights the model zoo expects.

    Args: those of :class:`~monai.handlers.CheckpointSaver`.
    """

    def state_dict(self) -> dict[str, Any]:
        """The key-metric tracking list (``{"saved": [(priority, filename), ...]}``); empty without a key metric."""
        if self._key_metric_checkpoint is None:
            return {"saved": []}
        return self._key_metric_checkpoint.state_dict()


class TrainingStateSaver:
    """Save everything needed to resume training to one file, atomically, every ``save_interval`` epochs.

    The file holds ``{name: obj.state_dict()}`` for each entry of ``save_dict`` (the network, optimiser, lr
    scheduler, a :class:`ResumableCheckpointSaver`...) and, under ``engine_key``, the state of the engine it is
    attached to (epoch and iteration counters; added at ``attach`` so that a config need not reference the trainer
    from inside its own handler list, which MONAI's config parser rejects as a circular reference). Attach it *after*
    the handlers that change state at ``EPOCH_COMPLETED`` (``LrScheduleHandler``, ``ValidationHandler``) so that the
    saved state includes their effect. Only rank 0 writes under ``torch.distributed``. Load it back with
    :class:`TrainingStateLoader` (same ``load_dict``). A run stopped on purpose before ``max_epochs`` (the engine's
    ``TERMINATE`` event, e.g. MONAI's ``EarlyStopHandler``) is saved once more with ``"run_status": {"terminated":
    True, "epoch": ...}``, so that the loader treats it as finished rather than resuming it; a killed or crashed
    run fires no ``TERMINATE`` and stays resumable.

    Args:
        save_path: the checkpoint file (its folder is created).
        save_dict: objects with ``state_dict()``; a ``DistributedDataParallel`` network is saved unwrapped.
        save_interval: save every N epochs.
        engine_key: key of the attached engine's state (``None``: not saved).

    Raises:
        ValueError: for an empty ``save_dict``, an object without ``state_dict``, or ``save_interval < 1``.
    """

    def __init__(self, save_path: str | os.PathLike, save_dict: Mapping[str, Any], save_interval: int = 1,
                 engine_key: str | None = "trainer") -> None:
        if not save_dict:
            raise ValueError("save_dict must name at least one object to save.")
        bad = [k for k, v in save_dict.items() if not callable(getattr(v, "state_dict", None))]
        if bad:
            raise ValueError(f"save_dict entries {bad} have no state_dict() method.")
        if int(save_interval) < 1:
            raise ValueError(f"save_interval must be >= 1, got {save_interval}.")
        self.save_path = str(save_path)
        self.save_dict = dict(save_dict)
        self.save_interval = int(save_interval)
        self.engine_key = engine_key
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        if self.engine_key:
            self.save_dict[self.engine_key] = engine
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self)
        engine.add_event_handler(Events.TERMINATE, self.terminated)

    def terminated(self, engine: Engine) -> None:
        """Save the state of a run stopped on purpose, marked so that it is not resumed."""
        self(engine, {"terminated": True, "epoch": int(engine.state.epoch)})

    def __call__(self, engine: Engine, run_status: Mapping[str, Any] | None = None) -> None:
        if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
            return
        state: dict[str, Any] = {} if run_status is None else {"run_status": dict(run_status)}
        for name, obj in self.save_dict.items():
            if isinstance(obj, (DataParallel, DistributedDataParallel)):
                obj = obj.module
            state[name] = obj.state_dict()
        save_checkpoint(state, self.save_path)
        self.logger.info(f"epoch {engine.state.epoch}: saved training state to '{self.save_path}'")


class TrainingStateLoader(CheckpointLoader):
    """MONAI's :class:`~monai.handlers.CheckpointLoader` for resuming a training run from :class:`TrainingStateSaver`.

    Differences from MONAI's loader:

    - the engine it is attached to is restored too (under ``engine_key``), so that training continues at the saved
      epoch;
    - a missing checkpoint file is not an error but a fresh start (logged), so the same config trains from scratch on
      the first run and resumes on the next;
    - only an *unfinished* run is resumed: one not stopped on purpose (:class:`TrainingStateSaver` marks a
      ``TERMINATE``, e.g. early stopping) whose saved engine state has ``iteration < max_epochs * epoch_length``,
      with ``max_epochs`` of the engine now running and ``epoch_length`` of the saved run. The state
      of a finished run is not loaded (logged: a new run starts from epoch 0), so training again with the same config
      trains again: MONAI Label's ``BundleTrainTask`` runs ``train.json`` once per ``/train`` request in the same
      folder, and with MONAI's loader a second request would restore the finished epoch counter and train nothing
      (or stop with MONAI's "Epoch count ... is larger than max_epochs" after a longer run). A larger ``max_epochs``
      than the saved run's (``--epochs``) still continues that run. Without ``engine_key`` (or a checkpoint without
      the engine state) the run cannot be judged and the checkpoint is loaded as MONAI does.

    ``resume=False`` ignores an existing checkpoint (``--resume false`` on the command line).

    Args:
        load_path: the checkpoint file written by :class:`TrainingStateSaver`.
        load_dict: the objects to restore (same keys as the saver's ``save_dict``).
        resume: load the checkpoint when it exists (a bool or a command-line string such as ``"false"``).
        engine_key: key of the attached engine's state (``None``: the engine is not restored).
        map_location, strict, strict_shape: as in :class:`~monai.handlers.CheckpointLoader`.
    """

    def __init__(self, load_path: str | os.PathLike, load_dict: Mapping[str, Any], resume: bool | str = True,
                 engine_key: str | None = "trainer", map_location: Any = None, strict: bool = True,
                 strict_shape: bool = True) -> None:
        super().__init__(load_path=str(load_path), load_dict=dict(load_dict), map_location=map_location,
                         strict=strict, strict_shape=strict_shape)
        self.resume = as_bool(resume, "resume")
        self.engine_key = engine_key

    def attach(self, engine: Engine) -> None:
        if self.engine_key:
            self.load_dict[self.engine_key] = engine
        super().attach(engine)

    def __call__(self, engine: Engine) -> None:
        if not self.resume:
            self.logger.info(f"resume is off: training from epoch 0 (ignoring '{self.load_path}' if it exists)")
            return
        if not os.path.isfile(self.load_path):
            self.logger.info(f"no training state at '{self.load_path}': training from epoch 0")
            return
        finished = self._finished_run(engine)
        if finished is not None:
            self.logger.info(f"the training state at '{self.load_path}' is of a finished run ({finished}): a new run "
                             "starts from epoch 0 (nothing loaded)")
            return
        super().__call__(engine)
        self.logger.info(f"resumed at epoch {engine.state.epoch} from '{self.load_path}'")

    def _finished_run(self, engine: Engine) -> str | None:
        """A description of the saved run when it reached ``engine.state.max_epochs``, else ``None``."""
        if not self.engine_key or engine.state.max_epochs is None:
            return None
        # a memory-mapped peek: only the few engine counters are read before the full load of super().__call__
        try:
            checkpoint = torch.load(self.load_path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # a file in torch's legacy (non-zip) format cannot be memory-mapped
            checkpoint = torch.load(self.load_path, map_location="cpu", weights_only=True)
        saved = checkpoint.get(self.engine_key) if isinstance(checkpoint, Mapping) else None
        if not isinstance(saved, Mapping) or "iteration" not in saved:
            return None
        status = checkpoint.get("run_status") if isinstance(checkpoint, Mapping) else None
        if isinstance(status, Mapping) and status.get("terminated"):
            return f"stopped on purpose at epoch {status.get('epoch')} (e.g. early stopping)"
        epoch_length = saved.get("epoch_length") or engine.state.epoch_length
        if not epoch_length:
            return None
        iteration, max_epochs = int(saved["iteration"]), int(engine.state.max_epochs)
        if iteration < max_epochs * int(epoch_length):
            return None
        return (f"saved at epoch {iteration // int(epoch_length)} ({iteration} iterations of {epoch_length} per "
                f"epoch), this run has max_epochs={max_epochs}")
