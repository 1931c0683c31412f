"""``lenszoo report --page``: the results page, generated from ``lenszoo evaluate`` results.

Everything on the page is computed from results.json files (and the training histories they
carry), so it regenerates and is never hand-typed. It opens with its tables and figures, in the
order of ``SECTIONS``; the prose that reads them comes from a notes file split into sections
(``lenszoo/page/notes.py``), each printed under its table. The parts live in ``lenszoo/page/``:
which records a table shows (select.py), the seeds and the "A beats B" rule (stats.py), the
tables, the figures and the kept records.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import LenszooError
from .page import tables
from .page.figures import copy_plots, is_figures_folder, learning_curves  # noqa: F401 (the CLI's names)
from .page.notes import split_notes
from .page.records import is_records_folder, page_records, write_records  # noqa: F401
from .page.select import CONTROL, SEEDS_WANTED, own_of_transfer, pick, pick_transfer, pick_tta, seed_rows
from .page.tables import headline_table  # noqa: F401 (`lenszoo report --readme`)
from .report import MARKER


@dataclass
class Context:
    """What every section is rendered from."""

    results: list
    released: dict  # sha256 -> manifest entry (or None) of the released weights
    paper: dict | None
    rows: dict  # seed rows per (arch, task, dataset)
    main: dict  # the released weights' record per (arch, task, dataset)
    rotations: dict
    figures: Path
    rel: str  # the figures folder as the page links it


@dataclass
class Section:
    key: str  # what a notes heading names to be printed under it
    kind: str  # "Table" or "Figure": numbered in page order
    title: str
    render: Callable[[Context], str]


def _classification(ctx):
    source = f"\n\nSeed paper: {ctx.paper['source']}." if ctx.paper and ctx.paper.get("source") else ""
    return (tables.classification_table(ctx.rows, ctx.paper["rows"] if ctx.paper else {}) + "\n\n"
            f"A row per architecture and recipe (its planned images). Figures are on the `holdout` split where "
            f"the recipe's seeds were evaluated there, else on `test` (column split). *Released weights*: the "
            f"checkpoint `lenszoo.load` gives; *mean ± sd over seeds*: over the recorded seeds of the recipe "
            f"(sd needs two), out of the {SEEDS_WANTED} asked for.{source}")


def _regression(ctx):
    return (tables.regression_table(ctx.rows) + "\n\nThe seed's Table 2 reports errors on raw masses; lenszoo "
            "regresses log10 m_a, the quantity the simulation draws uniformly, so errors are in dex and not "
            "comparable with raw-mass MSE.")


def _claim(ctx):
    return (tables.claim_table(ctx.rows) + "\n\nA verdict of *better* or *worse* needs the difference of seed "
            "means to exceed both the seed spread (the larger standard deviation over seeds, so two seeds a side) "
            "and twice the standard error of the test sampling; anything less is no ranking.")


def _control(ctx):
    return (f"`{CONTROL}` sees only the azimuthally averaged radial profile and global moments of each image "
            "(`docs/architectures.md`); what it reaches is what the ring's size and brightness are worth on that "
            "dataset, and a network's margin over it is the part that needs the image. Verdicts as in the claim "
            "table.\n\n" + tables.control_table(ctx.rows))


def _compute(ctx):
    return ("What each released checkpoint cost, as its training run recorded it: minutes are wall clock, "
            "resumes included, to the selected (best validation) epoch and for the whole run; a figure the run "
            "did not record says so.\n\n" + tables.compute_table(ctx.main, ctx.released))


def _probe(ctx):
    transfer = pick_transfer(ctx.results, ctx.released)
    return ("Each checkpoint scored on the C twin of its instrument (A -> C-euclid, B -> C-hst), where the lens, "
            "the source and the substructure mass are drawn alike for every class (`docs/datasets.md`).\n\n"
            + tables.transfer_table(transfer, own_of_transfer(ctx.results, transfer)))


def _sensitivity(ctx):
    from .page.sensitivity import sensitivity_section

    section = sensitivity_section(ctx.results, ctx.figures / "sensitivity.png", link=f"{ctx.rel}/sensitivity.png",
                                  released=frozenset(ctx.released))
    return section or ("_No evaluation on a stored C set that records each image's substructure fraction yet "
                       "(`lenszoo evaluate RUN --data data/C-hst-holdout --split holdout`)._")


def _rotations(ctx):
    return tables.rotation_table(ctx.rotations)


def _tta(ctx):
    return ("Outputs averaged over the rotations and flips of each test image (accuracy for classification, MAE in "
            "dex for regression):\n\n" + tables.tta_table(pick_tta(ctx.results, ctx.released)))


def _curves(ctx):
    drawn = learning_curves(ctx.rows, ctx.figures / "learning_curves.png")
    if not drawn:
        return "_No training histories in these results._"
    return (f"![validation metric against images seen (seed bands) and minutes]({ctx.rel}/learning_curves.png)\n\n"
            "The band spans the seeds' validation curves (min to max) about their mean, for each architecture's "
            "recipe with the most seeds. What more images would buy, read off each released checkpoint's curve "
            "(a flat or negative change means the budget is not what limits the model):\n\n"
            + tables.curve_table(ctx.main))


def _plots(ctx):
    plots = copy_plots(ctx.main, ctx.figures)
    return "\n".join(f"![{caption}]({ctx.rel}/{name})" for caption, name in plots) or "_No plots recorded._"


SECTIONS = [
    Section("classification", "Table", "classification (no_sub / cdm / axion)", _classification),
    Section("regression", "Table", "axion-mass regression, log10(m_a / eV), axion images", _regression),
    Section("regression by bin", "Table", "regression by true log10 m_a bin: MAE (dex) / correlation of prediction "
            "and truth, released weights", lambda ctx: tables.bins_table(ctx.main)),
    Section("claim", "Table", "the seed's claim, pair by pair: equivariant networks against ResNet-50", _claim),
    Section("control", "Table", f"against the control: each network's margin over `{CONTROL}`", _control),
    Section("compute", "Table", "what each released checkpoint cost", _compute),
    Section("shortcut probe", "Table", "the shortcut probe: released models on datasets C", _probe),
    Section("sensitivity", "Table", "sensitivity on C: AUC by substructure mass fraction", _sensitivity),
    Section("rotations", "Table", "rotation robustness (`lenszoo evaluate --rotations`)", _rotations),
    Section("tta", "Table", "test-time augmentation (`lenszoo evaluate --tta`, `lenszoo predict --tta`)", _tta),
    Section("learning curves", "Figure", "learning curves", _curves),
    Section("plots", "Figure", "ROC curves and regression scatter plots, released weights", _plots),
]


def build_page(results: list[dict], *, paper: dict | None, figures: Path, page: Path, notes: str | None = None,
               command: str = "lenszoo report ... --page docs/results.md", released=frozenset()) -> str:
    """The page's Markdown. ``released``: the released weights' sha256s, or a mapping of them to
    their manifest entries (whose recorded compute Table 6 then shows)."""
    main, rotations = pick(results, released)
    if not main:
        raise LenszooError("no test or holdout results to put on the page; run `lenszoo evaluate` first")
    placed, others = split_notes(notes or "", [s.key for s in SECTIONS])
    figures.mkdir(parents=True, exist_ok=True)
    rel = Path(os.path.relpath(figures.resolve(), page.resolve().parent)).as_posix()
    released = released if isinstance(released, dict) else dict.fromkeys(released)
    ctx = Context(results, released, paper, seed_rows(results, released), main, rotations, figures, rel)
    numbers = {"Table": 0, "Figure": 0}
    contents, bodies = [], []
    for section in SECTIONS:
        numbers[section.kind] += 1
        number = f"{section.kind} {numbers[section.kind]}"
        contents.append(f"{number} ({section.key})")
        bodies += [f"## {number}: {section.title}", "", section.render(ctx).strip(), ""]
        if placed.get(section.key):
            bodies += [placed[section.key], ""]
    contents += [heading for heading, _ in others]
    parts = [MARKER, "", "# Results", "",
             f"Generated by `{command}` from `lenszoo evaluate` results; do not edit by hand.", "",
             f"Each table and figure is followed by the notes that read it: {', '.join(contents)}.", "", *bodies]
    for heading, text in others:
        parts += [f"## {heading}", "", text, ""]
    return "\n".join(parts).rstrip() + "\n"


# -- the README's headline table ------------------------------------------------------------------
HEADLINE_BEGIN = "<!-- headline: written by `lenszoo report --readme`, from weights_manifest.json -->"
HEADLINE_END = "<!-- /headline -->"


def replace_headline(text: str, table: str, where: str = "README.md") -> str:
    """``text`` with the block between the headline markers replaced by ``table``."""
    if text.count(HEADLINE_BEGIN) != 1 or text.count(HEADLINE_END) != 1:
        raise LenszooError(f"{where} has no headline block; put the two lines {HEADLINE_BEGIN} and {HEADLINE_END} "
                           "where the table goes")
    before, rest = text.split(HEADLINE_BEGIN)
    _, after = rest.split(HEADLINE_END)
    return f"{before}{HEADLINE_BEGIN}\n{table}\n{HEADLINE_END}{after}"
