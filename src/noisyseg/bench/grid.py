"""What a bench is made of: methods, noise settings, seeds, and the training config of each cell."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from noisyseg.config import parse_yaml_text
from noisyseg.engine.run_folder import ce_stage_end_epoch
from noisyseg.errors import NoisysegError
from noisyseg.utils.text import shown

@dataclass(frozen=True)
class Method:
    """A bench method: the robust-stage loss, its parameters, whether it keeps the config's CE warm-up
    (``loss.warmup_epochs``) and model overrides."""

    loss: str
    params: dict[str, Any]
    warm_up: bool
    model: dict[str, Any]

METHODS: dict[str, Method] = {
    "ce": Method("ce", {}, False, {}),
    "sce": Method("sce", {}, False, {}),
    "gce": Method("gce", {}, False, {}),
    "apl": Method("apl", {}, False, {}),
    # beyond the paper: CE with each object label smoothed over the object classes (a fixed target: it cannot
    # starve a class the model has not learned)
    "ls": Method("ls", {}, False, {}),
    "lncis": Method("lncis", {}, True, {}),
    "lncis-nowarmup": Method("lncis", {}, False, {}),
    "lncis-pon": Method("lncis", {"pon_threshold": 6.0}, True, {}),
    "lncis-sce": Method("lncis", {"robust": "sce"}, True, {}),
    "lncis-gce": Method("lncis", {"robust": "gce"}, True, {}),
    # beyond the paper: the audit's "ignore" repair inside one run (noisyseg.losses.task_specific_loss)
    "lncis-online": Method("lncis", {"ignore_confident": 0.9}, True, {}),
    # beyond the paper: the CE stage, then lncis, except that the classes the CE-stage model has not learned
    # (mean p[label] of their labels below chance, 1/K) keep CE, so the robust term cannot starve them
    "lncis-learned": Method("lncis", {"learned_at": 1.0}, True, {}),
    # Xia et al. 2024 (GOOD): the CE stage, then CE / gradient ascent / clipped SCE by RoI set
    "good": Method("good", {}, True, {}),
    "forward": Method("forward", {}, False, {}),
    "forward-warmup": Method("forward", {}, True, {}),
    # beyond the paper: the CE stage, then forward correction through T with rows divided by the class prior
    "forward-balanced": Method("forward", {"balance": 1.0}, True, {}),
    # beyond the paper: the CE stage, then CE against each annotation's true-class posterior fixed at the switch
    "posterior": Method("posterior", {}, True, {}),
    "good-nowarmup": Method("good", {}, False, {}),
    # beyond the paper: one mask/box channel for all classes, so a wrong label cannot pick the wrong one
    "ce-agnostic": Method("ce", {}, False, {"class_agnostic": True}),
    "lncis-agnostic": Method("lncis", {}, True, {"class_agnostic": True}),
}
DEFAULT_METHODS = "ce,sce,gce,lncis"
#: The method key that sets the CE stage's length instead of a loss parameter (:func:`method_warmup`).
WARMUP_KEY = "warmup_epochs"
#: The method key that stretches the config's schedule to N epochs (:func:`stretch_schedule`): ``ce:epochs=48``
#: is CE given twice the compute of a 24-epoch run, the baseline an audit method (two runs) must beat.
EPOCHS_KEY = "epochs"

#: A method name followed by this trains, audits its own training file, repairs it and retrains
#: (``lncis+fix:action=ignore``; see :class:`FixPlan`).
FIX_SUFFIX = "+fix"
FIX_CHECKPOINTS = ("last", "ce_stage_end", "epochs")
FIX_DEFAULTS: dict[str, Any] = {"action": "ignore", "checkpoint": "last", "snapshots": 3, "retrain": None,
                                "filter_by": "prune_by_noise_rate", "folds": None, "transition": "data"}
#: Where a noise matrix rule's T comes from in a bench cell: the noisy file's own (known, injected noise), the
#: audit's confident-joint estimate or its one-rate uniform estimate (what a user with real noise has); the
#: audit's --transition values, written out so that parsing a method does not import the audit (and torch).
FIX_TRANSITIONS = ("data", "estimate", "uniform")

@dataclass(frozen=True)
class FixPlan:
    """An audit method (``BASE+fix:KEY=VALUE:...``): train ``base``, audit that run on its own training
    file, write the repaired file, retrain ``retrain`` on it with the same seed, score on clean val.

    Attributes:
        spec: the method as written.
        base: the first run's method spec: the base name with the spec's loss parameters (every key that is
            not a fix option), e.g. ``lncis:log_zero=-4`` for ``lncis+fix:log_zero=-4:action=drop``. With
            ``checkpoint`` last or ce_stage_end the first run *is* that method's bench cell (shared).
        action: what the repaired file does to a flagged annotation: relabel | ignore | drop.
        checkpoint: which models of the first run score the annotations: ``last``, ``ce_stage_end`` (the
            model at the end of the CE stage) or ``epochs`` (the probabilities of the last ``snapshots``
            epochs averaged; the first run then keeps those epochs, ``train.keep_epochs``).
        snapshots: how many final epochs ``checkpoint=epochs`` averages (>= 2).
        retrain: the method spec of the second run (default: ``base``, the same method again).
        filter_by: cleanlab's ``find_label_issues`` rule.
        folds: None, or K >= 2 for out-of-sample scoring: the training file's images are split into K
            folds (seeded); K first runs each train on the other K-1 folds and score the annotations of
            their held-out fold. K runs on (K-1)/K of the images: for K = 2 as much training as one run.
        transition: with a noise matrix rule, ``data`` (the noisy file's own matrix), ``estimate`` (the
            audit's confident-joint estimate from the same scores: the real-noise case) or ``uniform`` (one
            noise rate from that joint, spread evenly: :func:`noisyseg.audit.issues.uniform_noise_matrix`).
    """

    spec: str
    base: str
    action: str
    checkpoint: str
    snapshots: int
    retrain: str
    filter_by: str
    folds: int | None = None
    transition: str = "data"

    def options(self) -> dict[str, Any]:
        """The resolved fix options (what a cell record stores)."""
        options = {"action": self.action, "checkpoint": self.checkpoint,
                   "snapshots": self.snapshots if self.checkpoint == "epochs" else None,
                   "retrain": self.retrain, "filter_by": self.filter_by, "folds": self.folds}
        if self.transition != FIX_DEFAULTS["transition"]:  # cells recorded before the option keep their identity
            options["transition"] = self.transition
        return options

    def keep_epochs(self, epochs: int) -> list[int]:
        """The epoch snapshots the first run must keep for an audit of a run of ``epochs`` epochs."""
        return list(range(epochs - self.snapshots + 1, epochs + 1)) if self.checkpoint == "epochs" else []

    def checkpoint_names(self, epochs: int) -> list[str]:
        """Names of the first run's checkpoints the audit averages (in its ``checkpoints/`` folder)."""
        if self.checkpoint == "epochs":
            return [f"epoch_{e}" for e in self.keep_epochs(epochs)]
        return [self.checkpoint]

    @property
    def shares_base_cell(self) -> bool:
        """Whether the first run is the base method's own cell (its folder, record and results row)."""
        return self.checkpoint != "epochs" and self.folds is None

    @property
    def first_run_dir(self) -> str:
        """The folder name of the first run(s) under ``runs/`` and ``cells/`` (and ``folds/``)."""
        name = method_dir(self.base)
        if self.folds is not None:
            name += f"+folds{self.folds}"
        if self.checkpoint == "epochs":
            name += f"+snapshots{self.snapshots}"
        return name

def fix_plan(method: str) -> FixPlan | None:
    """The :class:`FixPlan` of an audit method spec; None for a method without ``+fix``.

    ``BASE+fix`` takes the fix options ``action`` (relabel | ignore | drop, default ignore), ``checkpoint``
    (last | ce_stage_end | epochs, default last), ``snapshots`` (with checkpoint=epochs, default 3),
    ``retrain`` (a method name, default the base method), ``filter_by`` (a cleanlab rule, default
    prune_by_noise_rate), ``folds`` (K >= 2: out-of-sample scoring by K first runs, default none) and
    ``transition`` (with a noise matrix rule: data, the noisy file's own matrix, estimate, the audit's
    confident-joint estimate, or uniform, that joint's one noise rate spread evenly; default data); any other
    ``KEY=VALUE`` is a loss parameter of the base method.
    """
    from noisyseg.audit import ACTIONS, FILTERS, NOISE_MATRIX_FILTERS

    if not isinstance(method, str):
        raise NoisysegError(f"--methods: expected a method name, got {shown(method)}")
    name, *pairs = method.split(":")
    if not name.endswith(FIX_SUFFIX):
        return None
    base_name = name[: -len(FIX_SUFFIX)]
    if base_name not in METHODS:
        raise NoisysegError(f"--methods: {shown(method)}: unknown method {base_name!r} before {FIX_SUFFIX}; "
                            f"available: {', '.join(METHODS)}")
    options, loss_pairs = dict(FIX_DEFAULTS), []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise NoisysegError(f"--methods: cannot read {pair!r} in {shown(method)}; expected METHOD:KEY=VALUE")
        if key.strip() in FIX_DEFAULTS:
            options[key.strip()] = parse_yaml_text(value, f"--methods {shown(method)}: {key.strip()}")
        else:
            loss_pairs.append(pair)
    where = f"--methods: {shown(method)}"
    if options["action"] not in ACTIONS:
        raise NoisysegError(f"{where}: action must be one of {', '.join(ACTIONS)}, got {options['action']!r}")
    if options["checkpoint"] not in FIX_CHECKPOINTS:
        raise NoisysegError(f"{where}: checkpoint must be one of {', '.join(FIX_CHECKPOINTS)}, "
                            f"got {options['checkpoint']!r}")
    snapshots = options["snapshots"]
    if isinstance(snapshots, bool) or not isinstance(snapshots, int) or snapshots < 2:
        raise NoisysegError(f"{where}: snapshots must be an integer >= 2, got {snapshots!r}")
    if any(p.partition("=")[0].strip() == "snapshots" for p in pairs) and options["checkpoint"] != "epochs":
        raise NoisysegError(f"{where}: snapshots needs checkpoint=epochs")
    folds = options["folds"]
    if folds is not None and (isinstance(folds, bool) or not isinstance(folds, int) or folds < 2):
        raise NoisysegError(f"{where}: folds must be an integer >= 2, got {folds!r}")
    if options["filter_by"] not in FILTERS:
        raise NoisysegError(f"{where}: filter_by must be one of {', '.join(FILTERS)}, got {options['filter_by']!r}")
    if options["transition"] not in FIX_TRANSITIONS:
        raise NoisysegError(f"{where}: transition must be one of {', '.join(FIX_TRANSITIONS)}, "
                            f"got {options['transition']!r}")
    if options["transition"] != FIX_DEFAULTS["transition"] and options["filter_by"] not in NOISE_MATRIX_FILTERS:
        raise NoisysegError(f"{where}: transition needs a noise matrix filter_by "
                            f"({', '.join(NOISE_MATRIX_FILTERS)})")
    base = ":".join([base_name, *loss_pairs])
    retrain = options["retrain"]
    if retrain is None:
        retrain = base
    elif not isinstance(retrain, str) or retrain not in METHODS:
        raise NoisysegError(f"{where}: retrain must be a method name ({', '.join(METHODS)}), got {retrain!r}")
    return FixPlan(method, base, options["action"], options["checkpoint"], snapshots, retrain,
                   options["filter_by"], folds, options["transition"])
DEFAULT_NOISE = "clean,sym0.2,sym0.4,sym0.6,sym0.8,asym0.2,asym0.4"
DEFAULT_SEEDS = "0,1,2"

@dataclass(frozen=True)
class NoiseSetting:
    """One noise setting of the train split: ``name`` as written (``clean``, ``sym0.4``, ``asym0.2``)."""

    name: str
    kind: str  # "clean" | "symmetric" | "asymmetric"
    rate: float

def parse_noise_setting(token: str) -> NoiseSetting:
    """``clean``, ``symR`` or ``asymR`` (R in [0, 1], e.g. ``sym0.4``) -> a :class:`NoiseSetting`."""
    if token == "clean":
        return NoiseSetting("clean", "clean", 0.0)
    m = re.fullmatch(r"(sym|asym)(\d*\.?\d+)", token)
    if not m:
        raise NoisysegError(f"--noise: cannot read {token!r}; expected clean, symR or asymR (e.g. sym0.4)")
    rate = float(m.group(2))
    if not 0.0 <= rate <= 1.0:
        raise NoisysegError(f"--noise: rate in {token!r} must be in [0, 1]")
    return NoiseSetting(token, "symmetric" if m.group(1) == "sym" else "asymmetric", rate)

def parse_noise(spec: str) -> list[NoiseSetting]:
    """``clean,sym0.4,asym0.2`` -> settings (rates in [0, 1]); a setting given twice is an error."""
    out = [parse_noise_setting(t.strip()) for t in spec.split(",") if t.strip()]
    if not out:
        raise NoisysegError("--noise: no setting given")
    check_noise(out)
    return out

def check_noise(noise: Sequence[NoiseSetting]) -> None:
    seen: dict[tuple[str, float], str] = {}
    for n in noise:
        key = (n.kind, n.rate)
        if key in seen:
            same = f" (the same setting as {seen[key]!r})" if seen[key] != n.name else ""
            raise NoisysegError(f"--noise: {n.name!r} is given twice{same}")
        seen[key] = n.name

def split_method(method: str) -> tuple[str, dict[str, Any]]:
    """``lncis:log_zero=-4:robust=sce`` -> ("lncis", {"log_zero": -4, "robust": "sce"}).

    Parameters after the name are loss parameters added to the method's own (values read as YAML), so one
    bench can compare settings of a loss, e.g. its ``log_zero`` constant; the key ``warmup_epochs`` is the
    exception: it sets the cell's CE stage (:func:`method_warmup`), not a loss parameter.
    """
    if not isinstance(method, str):
        raise NoisysegError(f"--methods: expected a method name, got {shown(method)}")
    name, *pairs = method.split(":")
    if name.endswith(FIX_SUFFIX):
        raise NoisysegError(f"--methods: {shown(method)} is an audit method; read it with fix_plan")
    if name not in METHODS:
        raise NoisysegError(f"--methods: unknown method {name!r}; available: {', '.join(METHODS)}")
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise NoisysegError(f"--methods: cannot read {pair!r} in {shown(method)}; expected METHOD:KEY=VALUE")
        params[key.strip()] = parse_yaml_text(value, f"--methods {shown(method)}: {key.strip()}")
    return name, params

def method_loss(method: str) -> tuple[str, dict[str, Any]]:
    """The robust-stage loss name and its parameters (the method's own, then those after the name)."""
    name, extra = split_method(method)
    extra.pop(WARMUP_KEY, None)
    extra.pop(EPOCHS_KEY, None)
    return METHODS[name].loss, {**METHODS[name].params, **extra}


def method_epochs(method: str) -> int | None:
    """``epochs=N`` after the method's name (an integer >= 1), or None: the config's schedule as it is."""
    _, extra = split_method(method)
    if EPOCHS_KEY not in extra:
        return None
    epochs = extra[EPOCHS_KEY]
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise NoisysegError(f"--methods: {shown(method)}: {EPOCHS_KEY} must be an integer >= 1, got {shown(epochs)}")
    return epochs


def stretch_schedule(tree: dict, epochs: int, stretch_warmup: bool = True) -> None:
    """Set ``tree``'s run to ``epochs`` epochs with every epoch count of its schedule scaled alike.

    With E the config's ``train.epochs``, the lr steps, the evaluation interval, the kept epochs and (unless
    ``stretch_warmup`` is False: the method set its own) ``loss.warmup_epochs`` become round(x * epochs / E),
    at least 1, so the run keeps the schedule's shape: 24 epochs with a step after 20 and a CE stage of 12
    become, at ``epochs=48``, a step after 40 and a CE stage of 24. Iteration counts (``warmup_iters``)
    stay as they are.
    """
    from noisyseg.config import TrainConfig

    train = tree.setdefault("train", {})
    scale = epochs / train.get("epochs", TrainConfig.model_fields["epochs"].default)

    def scaled(x: int) -> int:
        return max(1, round(x * scale))

    train["epochs"] = epochs
    for key in ("lr_steps", "keep_epochs"):
        if train.get(key):
            train[key] = sorted({scaled(x) for x in train[key]})
    if train.get("eval_interval"):
        train["eval_interval"] = scaled(train["eval_interval"])
    loss = tree.get("loss", {})
    if stretch_warmup and loss.get("warmup_epochs"):
        loss["warmup_epochs"] = scaled(loss["warmup_epochs"])

def method_warmup(method: str, base_warmup: int) -> int:
    """Epochs of CE before the method's loss: ``warmup_epochs=N`` after the name, else the config's
    ``loss.warmup_epochs`` for a method that keeps the CE warm-up and 0 for the others.

    ``lncis:warmup_epochs=18`` switches to lncis after 18 epochs instead of the config's 12, so a bench can
    measure a longer CE stage. CE itself takes no warm-up (there is nothing to switch to).
    """
    name, extra = split_method(method)
    if WARMUP_KEY not in extra:
        return base_warmup if METHODS[name].warm_up else 0
    warmup = extra[WARMUP_KEY]
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
        raise NoisysegError(f"--methods: {shown(method)}: {WARMUP_KEY} must be an integer >= 1, got {shown(warmup)}")
    if METHODS[name].loss == "ce":
        raise NoisysegError(f"--methods: {shown(method)}: {WARMUP_KEY} needs a method whose loss is not ce "
                            f"(the CE stage switches to that loss)")
    return warmup

def check_methods(methods: Sequence[str]) -> None:
    """Every method known, its loss parameters valid (the loss is built once), none given twice."""
    from noisyseg.losses import build_loss

    if not methods:
        raise NoisysegError("--methods: no method given")
    def resolved(spec: str, where: str) -> tuple[str, dict[str, Any]]:
        name, extra = split_method(spec)
        loss, params = method_loss(spec)
        method_warmup(spec, 0)  # a bad warmup_epochs or epochs fails here; both are part of the method's identity
        method_epochs(spec)
        try:
            return name, {**build_loss(loss, **params).params, WARMUP_KEY: extra.get(WARMUP_KEY),
                          EPOCHS_KEY: extra.get(EPOCHS_KEY)}
        except NoisysegError as e:
            raise NoisysegError(f"--methods: {where!r}: {e}") from None

    seen: list[tuple[Any, Any, str]] = []  # (method identity, resolved parameters, spec)
    for m in methods:
        plan = fix_plan(m)
        if plan is None:
            name, params = resolved(m, m)
        else:  # the same base, retrain and options: the same method
            base_name, base_params = resolved(plan.base, m)
            name = (FIX_SUFFIX, base_name, resolved(plan.retrain, m))
            params = {**base_params, **plan.options(), "retrain": None}
        for other_name, other_params, spec in seen:
            if other_name == name and other_params == params:
                same = f" (the same method as {spec!r})" if spec != m else ""
                raise NoisysegError(f"--methods: {m!r} is given twice{same}")
        seen.append((name, params, m))

def parse_methods(spec: str) -> list[str]:
    """Comma-separated methods, each a name from METHODS with optional ``:KEY=VALUE`` loss parameters, or
    an audit method ``NAME+fix:KEY=VALUE...`` (:func:`fix_plan`)."""
    methods = [m.strip() for m in spec.split(",") if m.strip()]
    check_methods(methods)
    return methods

def method_dir(method: str) -> str:
    """A folder name for a method spec (``lncis:log_zero=-4`` -> ``lncis_log_zero=-4``)."""
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", method)

def check_seeds(seeds: Sequence[int]) -> None:
    if not seeds:
        raise NoisysegError("--seeds: no seed given")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise NoisysegError(f"--seeds: expected integers >= 0, got {s!r}")
    for s in seeds:
        if list(seeds).count(s) > 1:
            raise NoisysegError(f"--seeds: {s} is given twice")

def parse_seeds(spec: str) -> list[int]:
    """``0,1,2`` -> [0, 1, 2]; a seed given twice is an error."""
    try:
        seeds = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise NoisysegError(f"--seeds: expected comma-separated integers, got {spec!r}") from None
    check_seeds(seeds)
    return seeds

def cell_config(base: dict, method: str, train_json: str | Path, seed: int, clean: bool = False) -> dict:
    """The base config tree with this cell's loss, seed and (noisy) train file; ``base`` is not changed.

    The robust-stage loss starts after the base's ``loss.warmup_epochs`` for methods that keep the CE
    warm-up, from the first epoch for the others. On clean labels (``clean``) a forward-corrected or
    posterior loss trains through the identity matrix (the clean file records no noise), which makes it CE.
    """
    tree = json.loads(json.dumps(base))
    name, _ = split_method(method)
    loss, params = method_loss(method)
    if clean and loss in ("forward", "posterior"):
        params = {**params, "transition": "identity"}
    tree["seed"] = seed
    tree.setdefault("model", {}).update(METHODS[name].model)
    tree["data"]["train_json"] = str(train_json)
    tree.setdefault("loss", {})
    warmup = method_warmup(method, tree["loss"].get("warmup_epochs", 0))
    tree["loss"] = {"name": loss, "params": params, "warmup_epochs": warmup}
    epochs = method_epochs(method)
    if epochs is not None:
        stretch_schedule(tree, epochs, stretch_warmup=WARMUP_KEY not in split_method(method)[1])
    tree.pop("out_dir", None)
    return tree

def fix_cell_configs(base: dict, plan: FixPlan, train_json: str | Path, fixed_json: str | Path,
                     seed: int) -> tuple[dict, dict]:
    """The config trees of an audit method's two runs: the first on ``train_json`` (the base method's
    cell config, keeping the epochs ``checkpoint=epochs`` averages) and the retrain on ``fixed_json``.

    Raises NoisysegError when the first run cannot give the checkpoint asked for: ``ce_stage_end`` needs
    a CE stage followed by another loss, ``epochs`` needs at least ``snapshots`` epochs.
    """
    first = cell_config(base, plan.base, train_json, seed)
    epochs = first["train"]["epochs"]
    where = f"--methods: {plan.spec!r}"
    if plan.checkpoint == "ce_stage_end":
        warmup = first["loss"]["warmup_epochs"]
        if ce_stage_end_epoch(warmup, epochs, first["loss"]["name"]) is None:
            raise NoisysegError(f"{where}: checkpoint=ce_stage_end needs a first run with a CE stage before "
                                f"another loss ({plan.base}: loss {first['loss']['name']}, warm-up {warmup} of "
                                f"{epochs} epochs)")
    if plan.checkpoint == "epochs":
        if plan.snapshots > epochs:
            raise NoisysegError(f"{where}: snapshots={plan.snapshots} is more than the {epochs} epochs of a run")
        kept = set(first["train"].get("keep_epochs") or [])
        first["train"]["keep_epochs"] = sorted(kept | set(plan.keep_epochs(epochs)))
    return first, cell_config(base, plan.retrain, fixed_json, seed)
