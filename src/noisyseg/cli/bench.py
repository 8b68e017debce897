"""``noisyseg bench``: argument parsing over :func:`noisyseg.bench.run_bench` and :func:`~noisyseg.bench.report_bench`."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench`` command to the top-level sub-parsers ``sub``."""
    from noisyseg.bench import grid

    p = sub.add_parser("bench", help="methods x noise settings x seeds: results.csv, curves.csv, table.md, "
                                     "ap_vs_noise.png", description=_description(),
                       epilog=_methods_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="base YAML config (its train set is the clean one that noise is added to)")
    p.add_argument("--methods", default=grid.DEFAULT_METHODS,
                   help=f"comma-separated: METHOD, METHOD:KEY=VALUE (loss parameters, e.g. lncis:log_zero=-4, or "
                        f"{grid.WARMUP_KEY}=N: N epochs of CE before the method's loss, or {grid.EPOCHS_KEY}=N: the "
                        f"config's schedule stretched to N epochs, e.g. ce:epochs=48 for CE at twice the compute) or "
                        f"METHOD{grid.FIX_SUFFIX}[:KEY=VALUE...] (train, audit the run's own training file, repair "
                        f"it, retrain; e.g. ce{grid.FIX_SUFFIX}:retrain=ce); the methods and the fix options are "
                        f"listed below (default {grid.DEFAULT_METHODS})")
    p.add_argument("--noise", default=grid.DEFAULT_NOISE,
                   help=f"comma-separated settings: clean, symR (symmetric, rate R in [0, 1]) or asymR "
                        f"(asymmetric, see --asym-preset), e.g. clean,sym0.4 (default {grid.DEFAULT_NOISE})")
    p.add_argument("--seeds", default=grid.DEFAULT_SEEDS,
                   help=f"comma-separated integers >= 0, one run per method and noise setting each "
                        f"(default {grid.DEFAULT_SEEDS})")
    p.add_argument("--asym-preset", default="supercategory",
                   help="asymmetric noise preset, a name from noisyseg.noise.presets (supercategory, cityscapes, "
                        "voc, fashion, ...; default supercategory)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a base config value (repeatable), e.g. train.epochs=6")
    p.add_argument("-o", "--out", type=Path, required=True, help="bench folder")
    p.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: rewrite curves.csv, table.md and ap_vs_noise.png from results.csv")
    p.set_defaults(func=run)


def _description() -> str:
    import noisyseg.bench
    from noisyseg.cli.help_text import plain_text

    return plain_text(noisyseg.bench.__doc__)


def _methods_epilog() -> str:
    """The method names and the audit method's options, as the README writes them."""
    import textwrap

    from noisyseg.audit import ACTIONS, FILTERS
    from noisyseg.bench import grid

    fix = grid.FIX_SUFFIX
    lines = [
        "methods:",
        *textwrap.wrap(", ".join(grid.METHODS), 96, initial_indent="  ", subsequent_indent="  ", break_on_hyphens=False),
        "",
        f"audit methods, METHOD{fix}[:KEY=VALUE...]: train METHOD, audit that run on its own training file,",
        "repair the file and retrain on it; any KEY that is not a fix option is a loss parameter of METHOD.",
        f"  action={'|'.join(ACTIONS)}  what the repair does to a flagged annotation "
        f"(default {grid.FIX_DEFAULTS['action']})",
        f"  checkpoint={'|'.join(grid.FIX_CHECKPOINTS)}  which models of the first run score "
        f"(default {grid.FIX_DEFAULTS['checkpoint']})",
        f"  snapshots=N  with checkpoint=epochs: how many last epochs are averaged (default "
        f"{grid.FIX_DEFAULTS['snapshots']})",
        "  retrain=METHOD  the method of the second run (default: METHOD again)",
        *textwrap.wrap(f"filter_by=RULE  the audit's flagging rule: {', '.join(FILTERS)} (default "
                       f"{grid.FIX_DEFAULTS['filter_by']})", 96,
                       initial_indent="  ", subsequent_indent="    ", break_on_hyphens=False),
        "  folds=K  K >= 2: score each annotation with a model that did not train on it",
        *textwrap.wrap(f"transition={'|'.join(grid.FIX_TRANSITIONS)}  with a noise matrix rule (noise_posterior, "
                       "noise_budget*): the noisy file's own matrix (known, injected noise), the audit's "
                       "confident-joint estimate or that joint's one noise rate spread evenly (real noise) "
                       f"(default {grid.FIX_DEFAULTS['transition']})", 96,
                       initial_indent="  ", subsequent_indent="    ", break_on_hyphens=False),
        "",
        "examples:",
        f"  --methods ce,lncis,ce{fix}:retrain=ce",
        f"  --methods lncis{fix}:action=relabel:retrain=ce,ce{fix}:checkpoint=epochs:retrain=ce",
    ]
    return "\n".join(lines)


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
