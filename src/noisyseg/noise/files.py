"""Noise on files: inject into a COCO json on disk, and describe a noisy file (the ``noisyseg noise`` work).

:func:`predict_file` predicts the label precision per class that a noise call would leave.
:func:`inject_file` checks both outputs before any work, reads the inputs, calls
:func:`noisyseg.noise.inject.inject` and writes atomically, so bad input leaves no output behind.
:func:`format_stats` renders :func:`noisyseg.noise.inject.noise_stats` as a text table. numpy only.
"""

from __future__ import annotations

import json
import os

from noisyseg.errors import NoisysegError

PathLike = str | os.PathLike


def inject_file(input_path: PathLike, out_path: PathLike, *, kind: str, rate: float, seed: int = 0,
                preset: str | None = None, pairs: str | list[tuple[str, str]] | None = None,
                matrix_path: PathLike | None = None, classes: list[str] | None = None, sampling: str = "exact",
                include_crowd: bool = False, report_path: PathLike | None = None, force: bool = False) -> dict:
    """Write ``input_path`` with seeded class-label noise to ``out_path``; return the noise report.

    Args:
        input_path: COCO instance json to corrupt; never changed unless it is ``out_path`` and ``force``.
        out_path: output json, written atomically (compact separators).
        kind, rate, seed, preset, classes, sampling, include_crowd: as for :func:`~noisyseg.noise.inject.inject`.
        pairs: ``"a>b,c>d"`` or ``[(source, target), ...]`` by class name (kind ``pairs``).
        matrix_path: json ``{"classes": [K names], "matrix": K x K}`` (kind ``matrix``).
        report_path: also write the report here as indented json.
        force: allow ``out_path`` to be the input file (never the matrix file or the report).
    Returns:
        the report of :func:`~noisyseg.noise.inject.inject` (``n_eligible``, ``n_changed``,
        ``realised_rate``, transitions, ...), the same dict as ``info.noise`` of the output.
    """
    from noisyseg.noise.inject import inject, parse_pairs
    from noisyseg.utils.io import atomic_write_text, check_not_overwriting_input, ensure_output_file, read_json

    inputs = [input_path] + ([matrix_path] if matrix_path else [])
    check_not_overwriting_input(out_path, inputs, force)
    if report_path:
        check_not_overwriting_input(report_path, inputs + [out_path], False)
    # Both outputs are checked before any work, so a bad report path cannot leave a written output behind.
    ensure_output_file(out_path, "output file")
    if report_path:
        ensure_output_file(report_path, "report file")
    if isinstance(pairs, str):
        pairs = parse_pairs(pairs)
    matrix = read_matrix_file(matrix_path) if matrix_path else None
    coco = read_json(input_path, "COCO annotation file")
    try:
        noisy, report = inject(coco, kind=kind, rate=rate, seed=seed, preset=preset, pairs=pairs, matrix=matrix,
                               classes=classes, sampling=sampling, include_crowd=include_crowd, in_place=True)
    except NoisysegError as e:
        raise NoisysegError(f"{input_path}: {e}") from None
    try:  # a NaN or Infinity anywhere (JSON has neither) must not produce an output that is not JSON
        text = json.dumps(noisy, separators=(",", ":"), allow_nan=False)
    except ValueError:
        raise NoisysegError(f"{input_path}: holds a NaN or Infinity number (not valid JSON); "
                            f"{out_path} not written") from None
    del noisy, coco  # free the parsed file before the encoded copy is made
    atomic_write_text(out_path, text)
    if report_path:
        atomic_write_text(report_path, json.dumps(report, indent=2) + "\n")
    return report


def format_stats(coco: dict, source: PathLike = "") -> str:
    """The realised clean -> noisy matrix of a parsed noisy COCO file as an aligned text table.

    Rows are clean classes, columns noisy classes, by name; classes with no annotation either way are
    left out. The last column is the fraction of each clean class whose label now differs; the last
    line the overall rate. ``source`` (the file's path) prefixes the header and error messages.
    """
    from noisyseg.noise.inject import noise_stats

    try:
        st = noise_stats(coco)
    except NoisysegError as e:
        raise NoisysegError(f"{source}: {e}" if source else str(e)) from None
    counts = st["counts"]
    keep = [i for i in range(len(st["classes"])) if counts[i].sum() or counts[:, i].sum()]
    names = [st["classes"][i] for i in keep]
    counts = counts[keep][:, keep]
    corner = "clean \\ noisy"
    w = max([len(corner)] + [len(n) for n in names])
    cw = max([5, len(str(int(counts.max())))] + [len(n) for n in names])
    lines = []
    block = (coco.get("info") or {}).get("noise") if isinstance(coco.get("info"), dict) else None
    if isinstance(block, dict):
        desc = ", ".join(f"{k} {block[k]}" for k in ("kind", "preset", "rate", "seed", "sampling") if k in block)
        layers = len(coco["info"].get("noise_history") or []) + 1
        lines.append(f"{source}: {desc}" + (f" (latest of {layers} noise calls)" if layers > 1 else ""))
    lines.append(f"{corner:<{w}} " + " ".join(f"{n:>{cw}}" for n in names) + f" {'noise':>7}")
    for i, n in enumerate(names):
        total = counts[i].sum()
        rate = 1 - counts[i, i] / total if total else 0.0
        cells = " ".join(f"{int(v):>{cw}}" for v in counts[i])
        lines.append(f"{n:<{w}} {cells} " + (f"{rate:7.1%}" if total else f"{'-':>7}"))
    lines.append(f"overall: {st['n_changed']} of {st['n']} annotations differ from their clean class "
                 f"({st['rate']:.2%})")
    lines.append(format_precision({k: (v["precision"], v["n"]) for k, v in st["precision"].items()},
                                  "label precision (share of the annotations labelled k whose clean class is k), "
                                  "lowest first:"))
    return "\n".join(lines)


def format_precision(precision: dict[str, tuple[float, float]], header: str) -> str:
    """Lines ``  NAME: P% of its N labels right``, lowest precision first (ties by name), under ``header``.

    ``precision``: class name -> (label precision in [0, 1], number of annotations carrying the label,
    possibly an expected, fractional number: printed rounded, as ``~N``).
    """
    w = max((len(n) for n in precision), default=0) + 1
    lines = [header]
    for name, (p, n) in sorted(precision.items(), key=lambda kv: (kv[1][0], kv[0])):
        count = f"{n:,.0f}" if abs(n - round(n)) < 1e-9 else f"~{n:,.0f}"  # an expected count: about
        lines.append(f"  {name + ':':<{w}} {p:6.1%} of its {count} labels right")
    return "\n".join(lines)


def predict_file(input_path: PathLike, *, kind: str, rate: float, preset: str | None = None,
                 pairs: str | list[tuple[str, str]] | None = None, matrix_path: PathLike | None = None,
                 classes: list[str] | None = None, sampling: str = "exact", include_crowd: bool = False) -> dict:
    """:func:`~noisyseg.noise.inject.predict_precision` of a COCO file on disk (arguments as for
    :func:`inject_file`); errors name the file."""
    from noisyseg.noise.inject import predict_precision
    from noisyseg.utils.io import read_json

    matrix = read_matrix_file(matrix_path) if matrix_path else None
    coco = read_json(input_path, "COCO annotation file")
    try:
        return predict_precision(coco, kind=kind, rate=rate, preset=preset, pairs=pairs, matrix=matrix,
                                 classes=classes, sampling=sampling, include_crowd=include_crowd)
    except NoisysegError as e:
        raise NoisysegError(f"{input_path}: {e}") from None


def format_prediction(prediction: dict, source: PathLike, description: str) -> str:
    """:func:`predict_file`'s result as text: a header naming the file and the noise, then one line per class."""
    per = prediction["per_class"]
    header = (f"{source}: expected label precision after {description} (share of the annotations labelled k "
              f"whose clean class is k; mean over classes {prediction['mean_precision']:.1%}), lowest first:")
    return format_precision({k: (v["precision"], v["expected_n"]) for k, v in per.items()}, header)


def read_matrix_file(path: PathLike) -> dict:
    """A transition matrix file ``{"classes": [...], "matrix": K x K}``, validated; errors name the file."""
    from noisyseg.noise.inject import check_matrix
    from noisyseg.utils.io import read_json

    matrix = read_json(path, "noise matrix file")
    try:
        check_matrix(matrix)
    except NoisysegError as e:
        raise NoisysegError(f"{path}: {e}") from None
    return matrix
