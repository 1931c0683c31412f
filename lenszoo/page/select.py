"""Which ``lenszoo evaluate`` records the results page shows.

A row of the page is an architecture's recipe on a task and dataset. Its seeds are the records of
that arch (tag included), task, dataset and recipe whose weights differ by their training seed
(``model.recipe.seed``); its figures are on the ``holdout`` split where any seed was evaluated
there, else on ``test``. The released weights (their sha256 in the manifest) give each row's
own figure and the page's single-record tables (bins, compute, transfer, rotations, TTA).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field

from ..report import _dig

SEEDS_WANTED = 3  # seeds every A/B classifier is trained with (issue 29)
PAGE_SPLITS = ("holdout", "test")  # the page's tables read holdout where it was evaluated, else test


# Which architecture plays which part on the page is a fact of its registration (``role`` and
# ``order``, see lenszoo.hookspecs), read here when asked for:
#   ORDER        registered architectures with an ``order``, in that order
#   EQUIVARIANT  those registered as "equivariant", in page order
#   BASELINE     the first "baseline"; CONTROL the first "control" (blind to substructure
#                morphology: a network's margin over it is the morphology signal)
def _registered() -> list:
    from ..registry import registry

    return sorted(registry.architectures.values(), key=lambda a: arch_order(a.name))


def _first(role: str) -> str | None:
    return next((a.name for a in _registered() if a.role == role), None)


def __getattr__(name):
    if name == "ORDER":
        return tuple(a.name for a in _registered() if a.order is not None)
    if name == "EQUIVARIANT":
        return tuple(a.name for a in _registered() if a.role == "equivariant")
    if name == "BASELINE":
        return _first("baseline")
    if name == "CONTROL":
        return _first("control")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def key_of(record) -> tuple:
    return record["arch"], record["task"], str(record["dataset"])


def arch_order(arch):
    """Where ``arch`` goes on the page: registered architectures by their ``order``, then every
    other name (a third-party architecture without one, a record of one not installed) by name."""
    from ..registry import registry

    spec = registry.architectures.get(arch)
    order = getattr(spec, "order", None)
    return (0, order, arch) if order is not None else (1, 0, arch)


def by_table_order(item):
    (arch, task, dataset) = item[0][:3]
    return task, dataset, arch_order(arch)


def sha_of(record):
    return _dig(record, "model", "weights_sha256")


def split_of(record) -> str:
    return record.get("split", "test")


def seed_of(record):
    seed = _dig(record, "model", "recipe", "seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def recipe_key(record) -> str:
    """What a run was trained with, less its seed: records with equal keys are seeds of one recipe."""
    recipe = dict(_dig(record, "model", "recipe") or {})
    recipe.pop("seed", None)
    if isinstance(recipe.get("init"), dict):  # where a run started: its weights, not a path
        recipe["init"] = recipe["init"].get("weights_sha256")
    if recipe:  # a recipe without these options trained in fp32, contiguous layout
        recipe.setdefault("precision", "fp32")
        recipe.setdefault("channels_last", False)
    return json.dumps(recipe, sort_keys=True, default=str)


def is_transfer(record) -> bool:
    """An evaluation on another dataset than the model was trained on (the shortcut probe)."""
    trained_on = record.get("trained_on")
    return trained_on is not None and str(trained_on) != str(record["dataset"])


def _own_dataset(results):
    return [r for r in results if split_of(r) in PAGE_SPLITS and not is_transfer(r)]


def _same_run(record, other) -> bool:
    """Two records of one training run (its weights, or an fp16 copy of them): same recipe and seed."""
    return recipe_key(record) == recipe_key(other) and seed_of(record) == seed_of(other)


def pick(results: list[dict], released=frozenset()) -> tuple[dict, dict]:
    """Per (arch, task, dataset): the main evaluation and the rotation evaluation, one set of weights
    each: the released weights' (sha256 in ``released``) where they were evaluated. The main one is
    on holdout where those weights were evaluated there, else on test (the most images); the
    rotation one on test (for an fp16 release, else the same run's weights before it)."""
    main, rotations = {}, {}
    groups = defaultdict(list)
    for record in _own_dataset(results):
        groups[key_of(record)].append(record)
    for key, everything in groups.items():
        records = [r for r in everything if sha_of(r) in released] or everything
        split = next(s for s in PAGE_SPLITS if any(split_of(r) == s for r in records))
        chosen = max((r for r in records if split_of(r) == split),
                     key=lambda r: (r.get("n") or 0, not r.get("rotations")))
        if not _dig(chosen, "model", "history"):  # an fp16 copy evaluated as a folder: its run's curve
            history = next((_dig(r, "model", "history") for r in everything
                            if _dig(r, "model", "history") and _same_run(r, chosen)), None)
            if history:
                chosen = {**chosen, "model": {**chosen["model"], "history": history}}
        main[key] = chosen
        turned = [r for r in records if r.get("rotations") and split_of(r) == "test"] or \
            [r for r in everything if r.get("rotations") and split_of(r) == "test" and _same_run(r, chosen)]
        if turned:
            rotations[key] = max(turned, key=lambda r: r.get("n") or 0)
    return main, rotations


def _most_images(groups: dict, released) -> dict:
    """Per key: the record on the most images, among the released weights' records where there are any."""
    chosen = {}
    for key, records in groups.items():
        records = [r for r in records if sha_of(r) in released] or records
        chosen[key] = max(records, key=lambda r: r.get("n") or 0)
    return chosen


def pick_transfer(results: list[dict], released=frozenset()) -> dict:
    """Per (arch, task, trained_on, dataset): the transfer evaluation on the most images, of the
    released weights where they were evaluated."""
    groups = defaultdict(list)
    for record in results:
        if split_of(record) == "test" and is_transfer(record):
            groups[(record["arch"], record["task"], str(record["trained_on"]), str(record["dataset"]))].append(record)
    return _most_images(groups, released)


def own_of_transfer(results: list[dict], transfer: dict) -> dict:
    """Per transfer key: the evaluation of the same weights (or of the run an fp16 copy came from)
    on their own dataset, on holdout where there is one. Another checkpoint's figure beside the
    probe would misread it (weights released later are probed again, not borrowed)."""
    own, candidates = {}, _own_dataset(results)
    for key, record in transfer.items():
        arch, task, trained_on, _ = key
        same = [r for r in candidates if key_of(r) == (arch, task, trained_on)
                and (sha_of(r) == sha_of(record) or _same_run(r, record))]
        for split in PAGE_SPLITS:
            on_split = [r for r in same if split_of(r) == split]
            if on_split:
                own[key] = max(on_split, key=lambda r: r.get("n") or 0)
                break
    return own


def pick_tta(results: list[dict], released=frozenset()) -> dict:
    """Per (arch, task, dataset): the test evaluation with test-time augmentation on the most
    images, of the released weights where they were evaluated."""
    groups = defaultdict(list)
    for record in results:
        if split_of(record) == "test" and isinstance(record.get("tta"), dict):
            groups[key_of(record)].append(record)
    return _most_images(groups, released)


# -- seeds ------------------------------------------------------------------------------------------
@dataclass
class SeedRow:
    """One recipe of one architecture on a task and dataset, and its seeds' evaluations."""

    arch: str
    task: str
    dataset: str
    recipe: dict  # the recipe less its seed
    split: str  # holdout where any seed was evaluated there, else test
    seeds: dict = field(default_factory=dict)  # seed (None: not recorded) -> its record on ``split``
    released: dict | None = None  # the released weights' record on ``split``
    released_unevaluated: bool = False  # the released weights are of this recipe, not evaluated on ``split``
    histories: list = field(default_factory=list)  # (seed, per-epoch rows) of each seed's run
    label: str = ""  # what tells it apart from the architecture's other recipes on the page

    @property
    def key(self) -> tuple:
        return self.arch, self.task, self.dataset

    @property
    def metric(self) -> str:
        return "accuracy" if self.task == "classify" else "mae"

    @property
    def n_seeds(self) -> int:
        """Seeds recorded: records whose recipe names its seed."""
        return sum(seed is not None for seed in self.seeds)

    @property
    def planned_images(self):
        epochs, size = self.recipe.get("epochs"), self.recipe.get("epoch_size")
        return epochs * size if isinstance(epochs, int) and isinstance(size, int) else None

    def values(self, metric: str | None = None) -> list:
        metric = metric or self.metric
        return [r["metrics"].get(metric) for _, r in sorted(self.seeds.items(), key=lambda kv: str(kv[0]))]

    def records(self) -> list:
        return [r for _, r in sorted(self.seeds.items(), key=lambda kv: str(kv[0]))]


def seed_rows(results: list[dict], released=frozenset()) -> dict[tuple, list[SeedRow]]:
    """Per (arch, task, dataset): a row per recipe; first the one with the most seeds (then the one
    holding the released weights): the architecture's row in comparisons (learning curves take the
    first whose runs recorded their training)."""
    groups = defaultdict(list)
    for record in _own_dataset(results):
        groups[(key_of(record), recipe_key(record))].append(record)
    rows = defaultdict(list)
    for (key, recipe), records in groups.items():
        split = next(s for s in PAGE_SPLITS if any(split_of(r) == s for r in records))
        row = SeedRow(*key, recipe=json.loads(recipe), split=split)
        for record in sorted((r for r in records if split_of(r) == split),  # released weights first, then most images
                             key=lambda r: (sha_of(r) not in released, -(r.get("n") or 0))):
            row.seeds.setdefault(seed_of(record), record)
            if sha_of(record) in released and row.released is None:
                row.released = record
        row.released_unevaluated = row.released is None and any(sha_of(r) in released for r in records)
        for seed in row.seeds:
            history = next((_dig(r, "model", "history") for r in sorted(records, key=lambda r: sha_of(r) not in released)
                            if seed_of(r) == seed and _dig(r, "model", "history")), None)
            if history:
                row.histories.append((seed, history))
        rows[key].append(row)
    for key, siblings in rows.items():
        siblings.sort(key=lambda r: (-r.n_seeds, r.released is None and not r.released_unevaluated,
                                     -(r.planned_images or 0)))
        _label(siblings)
    return dict(rows)


def _label(siblings: list[SeedRow]) -> None:
    """The planned images of each row and, where an architecture has several recipes of equal
    size, what else differs."""
    for row in siblings:
        images = row.planned_images
        epochs, size = row.recipe.get("epochs"), row.recipe.get("epoch_size")
        row.label = f"{images:,} ({epochs} × {size:,})" if images else "not recorded"
        alike = [r for r in siblings if r.planned_images == images and r is not row]
        if alike:
            differ = sorted(k for k in set(row.recipe) | {k for r in alike for k in r.recipe}
                            if any(r.recipe.get(k) != row.recipe.get(k) for r in alike))
            row.label += "; " + ", ".join(f"{k} {_shown(row.recipe.get(k))}" for k in differ)


def _shown(value) -> str:
    """A recipe value in a row's label: a nuisance or init by its name, a switch as on/off."""
    if isinstance(value, dict):
        return str(value.get("name", "…"))
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None else str(value)


