"""Checkpoints: written atomically, holding everything an exact resume needs."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from noisyseg.errors import NoisysegError
from noisyseg.utils.io import atomic_write_bytes

FORMAT_VERSION = 1


def rng_state() -> dict[str, Any]:
    """This process's random generator states (python, numpy, torch CPU, and CUDA when used)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Serialise ``payload`` (adds the format version) and atomically replace ``path``."""
    buf = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **payload}, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a noisyseg checkpoint, with one-line errors for a missing or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise NoisysegError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise NoisysegError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "label_map" not in ckpt:
        raise NoisysegError(f"{path}: not a noisyseg checkpoint (no model weights and class mapping)")
    return ckpt
