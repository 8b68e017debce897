"""Checkpoints: written atomically, holding everything an exact resume needs, readable without pickle.

A checkpoint is a ``torch.save``d dict of tensors and plain Python values (dicts, lists, tuples, str,
int, float, bool, None) only, so :func:`load_checkpoint` reads it with ``torch.load(weights_only=True)``:
a file handed to ``predict``, ``eval`` or ``--resume`` is data and can never run code.

Keys written by the trainer (format version 2):
    ``format_version`` int; ``model`` the model's state dict; ``optimizer``, ``scheduler``, ``scaler`` their
    state dicts; ``epoch`` int, the number of finished epochs; ``stage`` "ce" | "robust", the stage of the
    last finished epoch; ``rng`` a list with one :func:`rng_state` per process (rank order);
    ``train_seconds`` float, wall time spent training so far (over every resume); ``config`` the run's
    config as a JSON-style tree; ``label_map`` ``{"category_ids": [...], "names": [...]}``.
"""

from __future__ import annotations

import io
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from noisyseg.errors import NoisysegError
from noisyseg.utils.io import atomic_write_bytes

FORMAT_VERSION = 2


def rng_state() -> dict[str, Any]:
    """This process's random generator states, as tensors and plain values.

    Returns ``{"python": (version, tuple of 625 ints, gauss_next float | None),
    "numpy": {"keys": uint32 tensor (624,), "pos": int, "has_gauss": int, "cached_gaussian": float},
    "torch": uint8 tensor (the CPU generator's state), "cuda": [uint8 tensor per device]}``;
    ``cuda`` only when CUDA has been initialised.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    assert kind == "MT19937"
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators from a :func:`rng_state` dict (a CUDA state only where CUDA is available)."""
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_bytes(payload: dict[str, Any]) -> bytes:
    """``payload`` (plus the format version) serialised as a checkpoint file's contents."""
    buf = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **payload}, buf)
    return buf.getvalue()


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Serialise ``payload`` (adds the format version) and atomically replace ``path``."""
    return atomic_write_bytes(path, checkpoint_bytes(payload))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a noisyseg checkpoint without unpickling any object, with one-line errors.

    Raises :class:`NoisysegError` for a missing file, a file that is not a torch checkpoint, one that holds
    pickled Python objects (which could run code; older noisyseg versions wrote numpy objects), a foreign
    checkpoint (no model weights and class mapping) and a newer format version.
    """
    path = Path(path)
    if not path.is_file():
        raise NoisysegError(f"{path}: checkpoint not found")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise NoisysegError(f"{path}: cannot read checkpoint (not a file written by torch.save)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise NoisysegError(
            f"{path}: refused: the file holds pickled Python objects, which could run code when loaded "
            f"(a checkpoint of noisyseg before format {FORMAT_VERSION}, or not a noisyseg file); "
            "only tensors and plain values are read"
        ) from None
    except Exception as e:
        raise NoisysegError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "label_map" not in ckpt:
        raise NoisysegError(f"{path}: not a noisyseg checkpoint (no model weights and class mapping)")
    version = ckpt.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise NoisysegError(f"{path}: checkpoint format {version!r}; this noisyseg reads formats up to {FORMAT_VERSION}")
    return ckpt


def load_model_weights(model: torch.nn.Module, state: dict[str, Any], path: str | Path) -> None:
    """``model.load_state_dict(state)``, with a one-line error naming ``path`` when the weights do not fit."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        first = str(e).strip().splitlines()[-1].strip()
        raise NoisysegError(f"{path}: the checkpoint's weights do not fit the model ({first})") from None
    if missing or unexpected:
        parts = [f"{len(missing)} missing, e.g. {missing[0]}" if missing else "",
                 f"{len(unexpected)} unexpected, e.g. {unexpected[0]}" if unexpected else ""]
        raise NoisysegError(f"{path}: the checkpoint's weights do not fit the model "
                            f"({'; '.join(p for p in parts if p)})")
