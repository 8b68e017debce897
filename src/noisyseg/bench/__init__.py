"""``noisyseg bench``: the paper's table — methods x noise settings x seeds, trained and scored on clean val.

Each cell is one training run in ``OUT/runs/<method>/<noise>/seed<S>``; a cell with a results row is done
and skipped, a cell with only a checkpoint is resumed, a cell that finished training without its final AP
is evaluated from its checkpoint, so an interrupted bench continues where it stopped. After every cell
``results.csv``, ``curves.csv`` (val AP of every evaluated epoch), ``table.md`` (mean ± std, differences
to CE paired by seed, the share of CE's loss recovered, peak minus final of the curves) and
``ap_vs_noise.png`` are rewritten.

Python API: :func:`run_bench` and :func:`report_bench`; the grid's parts in :mod:`noisyseg.bench.grid`,
the tables in :mod:`noisyseg.bench.report`.
"""

from noisyseg.bench.grid import (
    DEFAULT_METHODS,
    DEFAULT_NOISE,
    DEFAULT_SEEDS,
    METHODS,
    Method,
    NoiseSetting,
    cell_config,
    method_dir,
    parse_methods,
    parse_noise,
    parse_seeds,
    split_method,
)
from noisyseg.bench.report import CSV_FIELDS, CURVE_FIELDS, format_report, format_table
from noisyseg.bench.runner import ON_CHANGED, record_command, report_bench, run_bench, run_dir_of

__all__ = [
    "CSV_FIELDS", "CURVE_FIELDS", "DEFAULT_METHODS", "DEFAULT_NOISE", "DEFAULT_SEEDS", "METHODS", "ON_CHANGED",
    "Method", "NoiseSetting", "cell_config", "format_report", "format_table", "method_dir", "parse_methods",
    "parse_noise", "parse_seeds", "record_command", "report_bench", "run_bench", "run_dir_of",
    "split_method",
]
