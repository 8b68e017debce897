"""A bench folder's layout and records: where each cell's files go, and the csv files, cell records and
command list, read and rewritten under the folder's lock so that bench processes sharing a folder add to
each other's results.

Layout of a bench folder ``OUT``:

- ``runs/<method>/<noise>/seed<S>/``: the cell's training run (a run folder, :mod:`noisyseg.engine.run_folder`);
- ``cells/<method>/<noise>/seed<S>.json``: what the cell was trained from (its full config and the sha256
  of its training file), so a later call can tell a run it may continue from a different one;
- ``noisy/<noise>_seed<S>.json``: the noisy training files (seeded, so they are made again identically);
- for an audit method, ``audits/<method>/<noise>/seed<S>/`` (the audit), ``fixed/<method>/<noise>_seed<S>.json``
  (the repaired file) and, for out-of-sample scoring, ``folds/`` (see :mod:`noisyseg.bench.cells`);
- ``results.csv``, ``per_class.csv``, ``curves.csv``, ``table.md``, ``ap_vs_noise.png`` (see
  :mod:`noisyseg.bench.report`) and ``command.txt`` (every distinct bench command that trained in the folder).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from noisyseg.bench.grid import NoiseSetting, method_dir
from noisyseg.bench.report import cell_key, read_rows, write_data, write_report
from noisyseg.utils.io import atomic_write_text


@dataclass(frozen=True)
class BenchFolder:
    """One bench call's folder and settings: what every cell needs besides its own method, noise and seed.

    Attributes:
        out: the bench folder.
        methods, noise: the call's grid (the tables list them in this order).
        on_changed: what to do with a cell whose folder holds a run of another setup:
            "error" refuses with one line (the bench), "retrain" deletes that run and trains again (the demo).
        write_tables: rewrite ``table.md`` and ``ap_vs_noise.png`` after each cell.
        progress: progress bars while training.
        tag: the prefix of printed lines.
        class_counts: (class name, annotations in the clean training file), for the per-class tables.
    """

    out: Path
    methods: tuple[str, ...]
    noise: tuple[NoiseSetting, ...]
    on_changed: str = "error"
    write_tables: bool = True
    progress: bool = True
    tag: str = "bench"
    class_counts: tuple[tuple[str, int], ...] = ()

    # ------------------------------------------------------------------ layout

    def run_dir(self, method: str, noise: str, seed: int) -> Path:
        return run_dir_of(self.out, method, noise, seed)

    def cell_file(self, method: str, noise: str, seed: int) -> Path:
        return self.out / "cells" / method_dir(method) / noise / f"seed{seed}.json"

    def noisy_file(self, noise: str, seed: int) -> Path:
        return self.out / "noisy" / f"{noise}_seed{seed}.json"

    def fixed_file(self, method: str, noise: str, seed: int) -> Path:
        return fixed_file_of(self.out, method, noise, seed)

    def audit_dir(self, method: str, noise: str, seed: int) -> Path:
        return audit_dir_of(self.out, method, noise, seed)

    # ------------------------------------------------------------------ records

    def rows(self) -> list[dict]:
        return read_rows(self.out / "results.csv")

    def row(self, key: tuple[str, str, int]) -> dict | None:
        return next((r for r in self.rows() if cell_key(r) == key), None)

    def record(self, row: dict | None, curve: list[dict] = (), per_class: list[dict] = ()) -> list[dict]:
        """Put ``row``, its ``curve`` and ``per_class`` rows into the csv files (replacing the cell's old ones)
        and, with ``write_tables``, rewrite the table and plot; all under the folder's lock, after re-reading
        the files. Returns every results row."""
        with locked(self.out):
            rows, curves, classes = (read_rows(self.out / name) for name in ("results.csv", "curves.csv",
                                                                              "per_class.csv"))
            if row is not None:
                key = cell_key(row)
                rows = [r for r in rows if cell_key(r) != key] + [row]
                curves = [c for c in curves if cell_key(c) != key] + list(curve)
                classes = [c for c in classes if cell_key(c) != key] + list(per_class)
            write_data(self.out, rows, curves, classes)
            if self.write_tables:
                write_report(self.out, rows, curves, list(self.methods), [n.name for n in self.noise], classes)
        return rows

    def drop_row(self, key: tuple[str, str, int]) -> None:
        with locked(self.out):
            rows, curves, classes = ([r for r in read_rows(self.out / name) if cell_key(r) != key]
                                     for name in ("results.csv", "curves.csv", "per_class.csv"))
            write_data(self.out, rows, curves, classes)


def run_dir_of(out: Path, method: str, noise: str, seed: int) -> Path:
    """The training run folder of one cell."""
    return Path(out) / "runs" / method_dir(method) / noise / f"seed{seed}"


def fixed_file_of(out: Path, method: str, noise: str, seed: int) -> Path:
    """The repaired training file an audit method's cell writes and retrains on."""
    return Path(out) / "fixed" / method_dir(method) / f"{noise}_seed{seed}.json"


def audit_dir_of(out: Path, method: str, noise: str, seed: int) -> Path:
    """The audit folder of an audit method's cell (label_issues, summary, review page, bench_audit.json)."""
    return Path(out) / "audits" / method_dir(method) / noise / f"seed{seed}"


def sha256_of_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def locked(out: Path):
    """Hold the bench folder's lock (``.results.lock``) while the block runs."""
    with open(Path(out) / ".results.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def record_command(out: Path, line: str) -> None:
    """Add a bench command to ``command.txt`` unless it is there already.

    A folder is often filled by several calls (one per seed or GPU, or a resumed bench), so the file keeps
    every distinct command that trained in it, in order.
    """
    with locked(out):
        path = Path(out) / "command.txt"
        lines = path.read_text().splitlines(keepends=True) if path.exists() else []
        if line not in lines:
            atomic_write_text(path, "".join(lines) + line)


def command_text(config: Any, methods, noise, seeds, asym_preset: str, overrides, out: Path) -> str:
    """The ``noisyseg bench`` command line that makes this call's grid (for ``command.txt``)."""
    parts = ["noisyseg bench", str(config), "--methods", ",".join(methods), "--noise", ",".join(n.name for n in noise),
             "--seeds", ",".join(map(str, seeds)), "--asym-preset", asym_preset]
    for o in overrides or []:
        parts += ["--set", o]
    return " ".join(parts + ["-o", str(out)]) + "\n"
