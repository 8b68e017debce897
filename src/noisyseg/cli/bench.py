"""``noisyseg bench``: argument parsing over :func:`noisyseg.bench.run_bench` and :func:`~noisyseg.bench.report_bench`."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from noisyseg.bench import grid

    p = sub.add_parser("bench", help="methods x noise settings x seeds: results.csv, curves.csv, table.md, "
                                     "ap_vs_noise.png", description=_description(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="base YAML config (its train set is the clean one that noise is added to)")
    p.add_argument("--methods", default=grid.DEFAULT_METHODS,
                   help=f"comma-separated, from: {', '.join(grid.METHODS)}; loss parameters may follow a name, "
                        f"e.g. lncis:log_zero=-4 (default {grid.DEFAULT_METHODS})")
    p.add_argument("--noise", default=grid.DEFAULT_NOISE, help=f"comma-separated settings (default {grid.DEFAULT_NOISE})")
    p.add_argument("--seeds", default=grid.DEFAULT_SEEDS, help=f"comma-separated (default {grid.DEFAULT_SEEDS})")
    p.add_argument("--asym-preset", default="supercategory",
                   help="asymmetric noise preset, a name from noisyseg.noise.presets (supercategory, cityscapes, "
                        "voc, fashion, ...; default supercategory)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a base config value (repeatable)")
    p.add_argument("-o", "--out", type=Path, required=True, help="bench folder")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: rewrite curves.csv, table.md and ap_vs_noise.png from results.csv")
    p.set_defaults(func=run)


def _description() -> str:
    import noisyseg.bench

    return noisyseg.bench.__doc__


def run(a: argparse.Namespace) -> int:
    from noisyseg.bench.grid import parse_methods, parse_noise, parse_seeds
    from noisyseg.bench.runner import report_bench, run_bench

    methods, noise = parse_methods(a.methods), parse_noise(a.noise)
    if a.report_only:
        rows = report_bench(a.out, methods, noise)
        print((a.out / "table.md").read_text())
        print(f"{len(rows)} runs in {a.out / 'results.csv'}")
        return 0
    run_bench(Path(a.config), methods, noise, parse_seeds(a.seeds), a.out, asym_preset=a.asym_preset,
              overrides=a.overrides, progress=not a.no_progress)
    return 0
