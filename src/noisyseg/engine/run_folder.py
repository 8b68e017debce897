"""The run folder: the one module that knows its layout and reads or writes its records.

A run folder holds

- ``config.yaml``: the validated config the run trains with, written when the run starts and never
  rewritten. Its first line is :data:`CONFIG_HEADER`, which tells a run's config from a user's own file
  of the same name (a run never writes over a file it did not make);
- ``metrics.jsonl``: the training log, one JSON object per line (``train`` every ``train.log_interval``
  iterations, ``epoch`` timings, ``eval`` AP);
- ``metrics.json``: the run's final record (``epoch``, ``train_seconds``, box and mask AP), written only by
  the trainer, or by ``eval`` of the final ``last.pt`` on the run's own val set;
- ``checkpoints/``: ``last.pt`` after every epoch, ``ce_stage_end.pt`` after the last CE epoch when another
  loss follows, ``epoch_N.pt`` for each epoch kept;
- ``noise_matrix.json``: the noise transition matrix a forward or posterior loss with ``transition:
  estimate`` estimated from ``ce_stage_end.pt`` at its stage switch (written after that checkpoint, read
  again on resume);
- ``class_targets.npz``: the ``posterior`` loss's soft class target of every training annotation, computed
  from ``ce_stage_end.pt`` at the stage switch, and with ``target_momentum`` < 1 refreshed before each later
  epoch (arrays ``annotation_ids``, ``targets`` and ``epoch``, the epoch whose model made them last; read on
  resume);
- ``ce_classes.json``: for ``lncis`` with ``learned_at``, each class's mean p[label] under ``ce_stage_end.pt``
  and whether the class keeps CE after the switch (made at the switch, read on resume);
- ``eval/<checkpoint>/``: what ``eval`` wrote for any other checkpoint or val set (never the record);
- ``tensorboard/`` when TensorBoard is installed.

Everything else in the code asks :class:`RunFolder` for these paths instead of joining them.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

from noisyseg.errors import NoisysegError
from noisyseg.utils.io import atomic_write_json, atomic_write_text, ensure_output_dir

CONFIG_HEADER = "# noisyseg run config: written by `noisyseg train` when the run started; train from a copy\n"
LAST = "last"
CE_STAGE_END = "ce_stage_end"
# the names this module writes in a run folder; any other file there is the user's and is left alone
_CONFIG, _LOG, _RECORD, _CHECKPOINTS, _EVAL, _TENSORBOARD, _NOISE_MATRIX, _CLASS_TARGETS, _CE_CLASSES = (
    "config.yaml", "metrics.jsonl", "metrics.json", "checkpoints", "eval", "tensorboard", "noise_matrix.json",
    "class_targets.npz", "ce_classes.json")


def epoch_checkpoint_name(epoch: int) -> str:
    """The name of the snapshot kept after 1-based ``epoch`` (``train.keep_epochs``)."""
    return f"epoch_{epoch}"


def ce_stage_end_epoch(warmup_epochs: int, epochs: int, loss_name: str) -> int | None:
    """The 1-based epoch after which ``ce_stage_end.pt`` is saved: the last CE epoch when a stage with
    another loss follows it; None otherwise (a CE run, or a warm-up as long as the run)."""
    return warmup_epochs if 0 < warmup_epochs < epochs and loss_name != "ce" else None


class RunFolderLocked(NoisysegError):
    """Another process is training this run folder right now (a bench may skip the cell instead)."""


class RunFolder:
    """The paths and records of the run folder ``path`` (which may not exist yet)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # ------------------------------------------------------------------ layout

    @property
    def config_path(self) -> Path:
        return self.path / _CONFIG

    @property
    def log_path(self) -> Path:
        return self.path / _LOG

    @property
    def record_path(self) -> Path:
        """``metrics.json``, the run's final record."""
        return self.path / _RECORD

    @property
    def noise_matrix_path(self) -> Path:
        """``noise_matrix.json``: the matrix a ``transition: estimate`` run estimated at its stage switch."""
        return self.path / _NOISE_MATRIX

    @property
    def class_targets_path(self) -> Path:
        """``class_targets.npz``: the ``posterior`` loss's per-annotation targets, made at the stage switch
        (and refreshed each later epoch with ``target_momentum`` < 1)."""
        return self.path / _CLASS_TARGETS

    @property
    def ce_classes_path(self) -> Path:
        """``ce_classes.json``: the classes an ``lncis`` loss with ``learned_at`` keeps on CE, made at the switch."""
        return self.path / _CE_CLASSES

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / _CHECKPOINTS

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / _TENSORBOARD

    def checkpoint(self, name: str = LAST) -> Path:
        """The checkpoint file called ``name`` (``last``, ``ce_stage_end``, ``epoch_3``; ``.pt`` optional)."""
        stem = name[:-3] if name.endswith(".pt") else name
        return self.checkpoints_dir / f"{stem}.pt"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoint(LAST)

    def eval_dir(self, checkpoint: Path, overrides: Sequence[str] = ()) -> Path:
        """Where ``eval`` writes for ``checkpoint`` (``eval/<name>/``; ``eval/<name>-<hash>/`` with overrides,
        so evaluations on other val sets keep their own files)."""
        name = Path(checkpoint).stem
        if overrides:
            import hashlib

            name += "-" + hashlib.sha256("\n".join(overrides).encode()).hexdigest()[:8]
        return self.path / _EVAL / name

    @classmethod
    def of_checkpoint(cls, checkpoint: str | os.PathLike) -> "RunFolder | None":
        """The run folder a checkpoint file lies in (``RUN/checkpoints/x.pt``), None for a file elsewhere."""
        parent = Path(checkpoint).parent
        if parent.name != _CHECKPOINTS:
            return None
        run = cls(parent.parent)
        return run if run.config_path.is_file() else None

    def is_run(self) -> bool:
        """Whether the folder holds a run (started: its config was written, or it has a checkpoint)."""
        return self.last_checkpoint.is_file() or self.written_config()

    def written_config(self) -> bool:
        """Whether ``config.yaml`` is one a run wrote (not a user's file of that name)."""
        try:
            with open(self.config_path, encoding="utf-8", errors="replace") as f:
                return f.readline() == CONFIG_HEADER
        except OSError:
            return False

    # ------------------------------------------------------------------ checkpoints

    def resolve_checkpoints(self, names: Sequence[str] | None = None) -> list[Path]:
        """The checkpoint files ``names`` stand for, in order, each once (``last`` when None).

        Each entry is a path to a file, a name in ``checkpoints/`` with or without ``.pt`` (``last``,
        ``ce_stage_end``, ``epoch_12``) or a glob there (``epoch_*``: every kept epoch, in epoch order).
        """
        found: list[Path] = []
        for name in names or [LAST]:
            as_path = Path(name)
            if as_path.is_file():
                found.append(as_path)
                continue
            stem = name[:-3] if name.endswith(".pt") else name
            if any(ch in stem for ch in "*?["):
                pattern = os.path.join(glob.escape(str(self.checkpoints_dir)), f"{stem}.pt")
                matches = sorted(glob.glob(pattern), key=_natural_key)
                if not matches:
                    raise NoisysegError(f"{self.checkpoints_dir}: no checkpoint matches {name!r}")
                found.extend(Path(m) for m in matches)
                continue
            path = self.checkpoint(stem)
            if not path.is_file():
                have = self.checkpoint_names()
                raise NoisysegError(f"{path}: checkpoint not found (this run has: {', '.join(have) or 'none'})")
            found.append(path)
        return list(dict.fromkeys(p.resolve() for p in found))

    def checkpoint_names(self) -> list[str]:
        """The names of the checkpoints the run holds, in natural order."""
        if not self.checkpoints_dir.is_dir():
            return []
        return sorted((p.stem for p in self.checkpoints_dir.glob("*.pt")), key=_natural_key)

    # ------------------------------------------------------------------ records

    def read_config_tree(self) -> dict[str, Any]:
        """The config the run trains with, as a tree (validate it with :func:`noisyseg.config.config_from_dict`)."""
        from noisyseg.config import load_config

        return load_config(self.config_path).model_dump(mode="json")

    def write_config(self, config_yaml: str) -> None:
        atomic_write_text(self.config_path, CONFIG_HEADER + config_yaml)

    def final_record(self, epochs: int | None = None) -> dict[str, Any] | None:
        """The run's final record (``metrics.json``) when it holds box and mask AP (and, with ``epochs``, that
        epoch); None when it is missing, torn or incomplete."""
        try:
            record = json.loads(self.record_path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or not all(isinstance(record.get(k), dict) for k in ("segm", "bbox")):
            return None
        if epochs is not None and record.get("epoch") != epochs:
            return None
        return record

    def recorded_train_seconds(self) -> float | None:
        """``train_seconds`` of ``metrics.json`` even when the record lacks its AP; None when it has none."""
        try:
            value = json.loads(self.record_path.read_text()).get("train_seconds")
        except (OSError, ValueError, AttributeError):
            return None
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def write_final_record(self, epoch: int, train_seconds: float, metrics: dict[str, Any]) -> None:
        """Write ``metrics.json``: the final epoch, the training time and the AP of the final model."""
        atomic_write_json(self.record_path, {"epoch": epoch, "train_seconds": train_seconds, **metrics}, indent=2)

    def log_records(self) -> list[dict[str, Any]]:
        """The complete lines of ``metrics.jsonl`` (a line torn by a kill is left out)."""
        if not self.log_path.exists():
            return []
        out = []
        for line in self.log_path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
        return out

    # ------------------------------------------------------------------ starting a run

    def check_can_start(self, resume: bool, inputs: Sequence[str | os.PathLike] = ()) -> None:
        """Refuse, before any work, a start that would write over a file the run did not make.

        A fresh run needs a folder without a checkpoint whose run files, if any, are of a run of ours killed
        before its first checkpoint; a resumed one needs ``last.pt``. No file the run writes may be one of
        ``inputs`` (the config file, the data).
        """
        ensure_output_dir(self.path, "run folder")
        if resume:
            if not self.last_checkpoint.is_file():
                raise NoisysegError(f"{self.path}: nothing to resume ({self.last_checkpoint} not found); "
                                    "train without --resume to start the run")
        elif self.last_checkpoint.exists():
            raise NoisysegError(f"{self.path}: already holds a run; pass --resume to continue it or choose another --out")
        ours = {self.config_path, self.log_path, self.record_path}
        for given in inputs:
            given = Path(given)
            if given.exists() and any(given.resolve() == p.resolve() for p in ours if p.exists()):
                raise NoisysegError(f"{given}: is an input of this run and would be written over as the run's "
                                    f"{given.name}; choose another --out")
        for made_at_switch in (self.noise_matrix_path, self.class_targets_path, self.ce_classes_path):
            # a run writes these only after a checkpoint, so a fresh start finding one found someone else's file
            if not resume and made_at_switch.exists():
                raise NoisysegError(f"{made_at_switch}: not made by this run, and a run whose loss makes it at the "
                                    "stage switch would write over it; choose another --out")
        if not resume and (self.config_path.exists() or self.record_path.exists() or self.log_path.exists()) \
                and not self.written_config():
            name = next(p for p in (self.config_path, self.record_path, self.log_path) if p.exists())
            raise NoisysegError(f"{name}: not made by a noisyseg run, and a run would write over it; "
                                "choose another --out")

    def prepare_fresh(self, config_yaml: str) -> None:
        """Start a fresh run: drop the files of a run of ours killed in its first epoch, write the config."""
        self.remove_temporaries()
        for stale in (self.log_path, self.record_path):
            stale.unlink(missing_ok=True)
        self.write_config(config_yaml)

    def remove_temporaries(self) -> None:
        """Remove the temporary files a killed atomic write left behind (``.<name>.tmp``)."""
        for folder in (self.path, self.checkpoints_dir):
            if folder.is_dir():
                for tmp in folder.glob(".*.tmp"):
                    tmp.unlink(missing_ok=True)


class RunLock:
    """The exclusive lock of the one process that trains into a run folder, for as long as it does.

    The lock is a ``flock`` on the folder itself (no lock file); the OS drops it when the process ends,
    even by ``kill -9``, so no stale lock outlives a run. Folders this lock created are removed again
    by ``close(failed=True)`` when the start fails.
    """

    def __init__(self, folder: RunFolder) -> None:
        path = folder.path
        self._created = [p for p in (path, *path.parents) if not p.exists()][::-1]  # outermost first
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise NoisysegError(f"{path}: cannot create the run folder ({e.strerror})") from None
        self._fd: int | None = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.close(failed=True)
            raise RunFolderLocked(f"{path}: another process is training this run; wait until it ends "
                                  "or choose another --out") from None

    def close(self, failed: bool = False) -> None:
        """Release the lock; after a failed start, also remove the (empty) folders this lock created."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if failed:
            for p in reversed(self._created):
                with contextlib.suppress(OSError):
                    p.rmdir()  # only removes an empty folder


class MetricsLog:
    """``metrics.jsonl`` of a run, written by rank 0; TensorBoard scalars when TensorBoard is installed."""

    def __init__(self, folder: RunFolder, enabled: bool) -> None:
        self.folder = folder
        self.enabled = enabled
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(folder.tensorboard_dir))
            except Exception:  # tensorboard is optional
                self.tb = None

    def records(self) -> list[dict[str, Any]]:
        return self.folder.log_records()

    def keep_until(self, epoch: int) -> None:
        """Drop every line after 1-based ``epoch`` (a resumed run's killed epoch would be logged twice)."""
        kept = [r for r in self.records() if r.get("epoch", 0) <= epoch]
        atomic_write_text(self.folder.log_path, "".join(json.dumps(r) + "\n" for r in kept))

    def write(self, record: dict[str, Any], step: int | None = None) -> None:
        if not self.enabled:
            return
        with open(self.folder.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None and step is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("epoch", "iter"):
                    self.tb.add_scalar(f"{record.get('event', 'train')}/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _natural_key(text: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(text))]
