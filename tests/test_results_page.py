"""Every figure from a record (issue 29, item 4): docs/results.md is rendered from the evaluations kept
in docs/results-data alone, and every number in its prose and in docs/results-notes.md equals
(within its rounding) a kept record's value, a value the page's tables render from them, or a
simple reading of them (a difference of two figures of one kind, a change between epochs, a
fraction as a percentage). Passages whose figures have no kept record are marked so, visibly."""

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGE, NOTES, RECORDS = DOCS / "results.md", DOCS / "results-notes.md", DOCS / "results-data"

# Numbers in the prose that are not figures of an experiment. Keep this list short: a figure that
# is missing here belongs in a record, not on this list.
NOT_FIGURES = {
    33.3,  # chance with three classes, 100/3 %
    0.15,  # the regression goal of issue 6, in dex
}

DECIMAL = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+\.\d+"
UNIT = r"\s?(?:%|points?\b|σ|dex\b|×)"
NUMBER = re.compile(rf"(?<![\w.,/-])[+−-]?(?:(?P<decimal>{DECIMAL})|(?P<integer>\d+)(?=(?:\s?[–-]\s?\d+)?{UNIT}))")


def prose(text: str, keep_code: bool = False) -> str:
    """``text`` without what is not prose: code blocks (and spans, unless kept: they name the
    architectures), links' targets, HTML comments, and the passages marked as having no kept record."""
    from lenszoo.page.notes import unrecorded_spans

    for start, end in reversed(unrecorded_spans(text)):
        text = text[:start] + text[end:]
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    return text if keep_code else strip_code(text)


def strip_code(text: str) -> str:
    return re.sub(r"`[^`\n]*`", "", text)


def numbers(text: str) -> list[tuple[str, float, int]]:
    """(as written, value, decimals) of every figure in ``text``: decimals, thousands, and whole
    numbers with a unit (%, points, σ, dex, ×)."""
    found = []
    for match in NUMBER.finditer(text):
        written = match["decimal"] or match["integer"]
        digits = written.split(".")[1] if "." in written else ""
        found.append((match.group(0), float(written.replace(",", "")), len(digits)))
    return found


def _leaves(value, path=()):
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield path, float(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))


# leaves that are fractions, written in the prose as percentages (accuracy 0.9749 -> 97.49 %)
FRACTIONS = {"accuracy", "recall", "prediction_change_rate", "marginal_at_least_1", "marginal_at_least_5"}
# what an evaluation record's figures are (not its confusion counts, loss sums or provenance)
FIGURE_PARTS = ("metrics", "rotations", "tta")


HEADLINE = ("accuracy", "auc", "mae", "rmse", "bias", "correlation", "mae_predicting_mean", "n")


def _headline(metrics: dict) -> dict:
    return {k: metrics.get(k) for k in HEADLINE}


def _figures(metrics: dict) -> dict:
    """An evaluation's figures: its headline metrics, per-class recall and per-bin metrics."""
    return {**_headline(metrics), "recall": metrics.get("recall"), "by_log10_ma": metrics.get("by_log10_ma")}


class Values:
    """The values a figure may quote, as written (plain numbers and percentages), by the
    architecture whose records give them (None: no one architecture's, like the signal's)."""

    def __init__(self):
        self.pools: dict = {}

    def add(self, value, fraction=False, arch=None):
        plain, percent = self.pools.setdefault(arch, (set(), set()))
        (percent if fraction else plain).add(abs(100 * value if fraction else value))

    def leaves(self, tree, arch=None):
        for leaf, value in _leaves(tree):
            self.add(value, any(key in FRACTIONS for key in leaf), arch)

    def sorted_pools(self, archs) -> tuple[list, list]:
        """(plain, percent) values of these architectures' records and of no one's; of all, for none."""
        chosen = [a for a in self.pools if a is None or a in archs] if archs else list(self.pools)
        return (sorted(set().union(*(self.pools[a][0] for a in chosen))),
                sorted(set().union(*(self.pools[a][1] for a in chosen))))


ARCH_NAMES = {"resnet50": ("`resnet50`", "ResNet-50"), "c8_steerable": ("`c8_steerable`",), "hnet": ("`hnet`",),
              "etn": ("`etn`",), "radial_profile": ("`radial_profile`", "control")}


def archs_named(text: str) -> set[str]:
    return {arch for arch, names in ARCH_NAMES.items() if any(name in text for name in names)}


def candidates(page_text: str) -> Values:
    """Every value a figure may quote, by architecture: the kept records' figures, the seed paper's
    and the manifest's, the numbers the page's tables render from them (the differences the claim
    and control tables compute among them), and simple readings of one run's figures: what its
    last epoch added, what a rotation or TTA changes, its margin over chance or over the mean
    predictor, and, bin by bin, a regressor's difference from the control."""
    from lenszoo.compute import record_compute
    from lenszoo.page.select import CONTROL

    values = Values()
    bins: dict[tuple, list] = {}
    for path in sorted(RECORDS.glob("*.json")):
        record = json.loads(path.read_text())
        if record.get("format") == "lenszoo-signal":
            values.leaves(record["summary"])
            continue
        if record.get("format") == "lenszoo-bf16-train-parity":  # benchmarks/bf16_train_parity.py
            values.leaves({"bf16_speedup": record.get("bf16_speedup")}, record.get("arch"))
            continue
        if record.get("format") != "lenszoo-evaluation":
            continue
        arch = record["arch"].split(".")[0]
        model, metrics = record.get("model") or {}, record["metrics"]
        values.leaves(_figures(metrics), arch)
        for turned in (record.get("rotations") or {}).values():  # the headline figures of a turned test set
            values.leaves({**_headline(turned.get("metrics") or {}), "change": turned.get("mean_abs_output_change")},
                          arch)
        tta = record.get("tta") or {}
        values.leaves({**_headline(tta.get("metrics") or {}), "prediction_change_rate": tta.get("prediction_change_rate")},
                      arch)
        values.leaves({"n": record.get("n"), "images_seen": model.get("images_seen"),
                       "parameters": model.get("parameters"), "compute": record_compute(record)}, arch)
        history = model.get("history") or []
        for row in history:  # where each epoch ended
            values.leaves({"images_seen": row.get("images_seen"), "train_minutes": row.get("train_minutes")}, arch)
        if record["task"] == "regress":  # a regressor's validation curve, epoch by epoch
            values.leaves([(row.get("val") or {}).get("mae") for row in history], arch)
        for part in ("val", "train"):  # a classifier's: its range, and what its last epoch added
            series = [v for v in ((row.get(part) or {}).get("accuracy") for row in history) if v is not None]
            if series:
                values.add(min(series), True, arch), values.add(max(series), True, arch)
                if len(series) > 1:
                    values.add(series[-1] - series[-2], True, arch)
        turned = [(r.get("metrics") or {}) for r in (record.get("rotations") or {}).values()]
        for other in [*turned, tta.get("metrics") or {}]:  # what a turn or TTA changes
            for metric in ("accuracy", "mae"):
                if isinstance(other.get(metric), (int, float)) and isinstance(metrics.get(metric), (int, float)):
                    values.add(other[metric] - metrics[metric], metric in FRACTIONS, arch)
        if record["task"] == "classify":
            values.add(metrics["accuracy"] - 1 / 3, True, arch)  # above chance
        elif isinstance(metrics.get("mae_predicting_mean"), (int, float)):
            values.add(metrics["mae_predicting_mean"] - metrics["mae"], arch=arch)  # better than the mean
        if record.get("trained_on") in (None, record["dataset"]) and metrics.get("by_log10_ma"):
            bins.setdefault((record["dataset"], record.get("split")), []).append((arch, metrics["by_log10_ma"]))
    for regressors in bins.values():  # bin by bin against the control (its table has the overall margins)
        for arch, network in regressors:
            for control in (b for a, b in regressors if a == CONTROL and arch != CONTROL):
                for x, y in zip(network, control):
                    for metric in ("mae", "correlation"):
                        values.add(x[metric] - y[metric], arch=arch)
                        values.add(x[metric] - y[metric], arch=CONTROL)
    paper = json.loads((DOCS / "seed_paper.json").read_text())
    for row in paper["classify"]:
        values.add(row["accuracy"], True, row["arch"])
    manifest = json.loads((REPO / "weights_manifest.json").read_text())
    for entry in manifest["weights"]:
        recorded = {split: entry["metrics"][split] for split in ("test", "holdout") if split in entry["metrics"]}
        values.leaves({"metrics": recorded, "compute": entry["recipe"].get("compute")}, entry["arch"])
    for line in page_text.splitlines():  # what the tables render from the records, by the row's architectures
        if line.startswith("|"):
            archs = archs_named(line.replace("`radial_profile`", "control")) or {None}
            for _, value, _ in numbers(line.replace("−", "-")):
                for arch in archs:  # as a plain number and as a percentage: the column says which it is
                    values.add(value, False, arch)
                    values.add(value / 100, True, arch)
    return values


def _near(ordered, value, tolerance) -> bool:
    import bisect

    i = bisect.bisect_left(ordered, value - tolerance)
    return i < len(ordered) and ordered[i] <= value + tolerance


SENTENCE_END = re.compile(r"(?<=[.;!?])\s+(?=[A-Z(*`])|\n\s*\n")


def unbacked(text: str, values: Values) -> list[str]:
    """The figures in ``text`` that equal no value within their rounding: a value of the
    architectures its sentence names (of any, where it names none); a percentage or a number of
    points one of the percentages, a number of dex a plain value, any other number either."""
    missing = []
    for sentence in SENTENCE_END.split(prose(text, keep_code=True)):
        plain, percent = values.sorted_pools(archs_named(sentence))
        sentence = strip_code(sentence)
        for match, (written, value, decimals) in zip(NUMBER.finditer(sentence), numbers(sentence)):
            if value in NOT_FIGURES:
                continue
            unit = re.match(r"\s?(%|points?\b|dex\b)?", sentence[match.end():])[1]
            pools = [percent] if unit in ("%", "point", "points") else [plain] if unit == "dex" else [plain, percent]
            tolerance = 0.5 * 10 ** -decimals * (1 + 1e-9) + 1e-12
            if not any(_near(pool, value, tolerance) for pool in pools):
                missing.append(written)
    return missing


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    """docs/results.md rendered again from docs/results-data, the notes, the seed paper and the
    manifest; and the same page without its notes (what the code renders from the records)."""
    from lenszoo.report import load_paper, load_results
    from lenszoo.report_page import build_page
    from lenszoo.pretrained.manifest import released_weights

    command = PAGE.read_text().splitlines()[4].split("`")[1]
    released = {w.sha256: w.to_entry() for w in released_weights(REPO / "weights_manifest.json")}
    pages = []
    for notes in (NOTES.read_text(), None):
        root = tmp_path_factory.mktemp("docs")
        pages.append(build_page(load_results([RECORDS]), paper=load_paper(DOCS / "seed_paper.json"),
                                figures=root / "results-figures", page=root / "results.md", notes=notes,
                                command=command, released=released))
    return pages


@pytest.fixture(scope="module")
def values(regenerated):
    return candidates(regenerated[1])  # the tables the records render, never a table the notes hold


def test_the_page_is_rendered_from_its_kept_records_alone(regenerated):
    assert PAGE.read_text() == regenerated[0], "docs/results.md differs from what docs/results-data renders; " \
                                            "regenerate it with the command on its first lines"


def test_the_page_opens_with_its_tables_and_each_note_sits_under_its_table():
    from lenszoo.page.notes import split_notes
    from lenszoo.report_page import SECTIONS

    text = PAGE.read_text()
    head = text[:text.index("## Table 1:")].strip().split("\n\n")
    # before Table 1: the marker, the title, the generated-by line and the list of contents; no prose
    assert len(head) == 4 and head[1] == "# Results" and head[3].startswith("Each table and figure is followed")
    assert text.index("## Table 1:") < text.index("\n| ")
    placed, others = split_notes(NOTES.read_text(), [s.key for s in SECTIONS])
    assert {"classification", "regression", "claim", "control", "compute"} <= set(placed)
    parts = text.split("\n## ")
    for key, body in placed.items():
        title = next(s.title for s in SECTIONS if s.key == key)
        own = next(part for part in parts if part.split("\n", 1)[0].endswith(f": {title}"))
        assert body in own, key  # under its own table, not elsewhere
    for heading, body in others:  # the lab notebook follows the tables
        assert text.index(f"## {heading}") > text.index("## Figure 2:")


@pytest.mark.parametrize("name", ["results.md", "results-notes.md"])
def test_every_figure_in_the_prose_equals_a_kept_record(values, name):
    text = (DOCS / name).read_text()
    missing = unbacked(text, values)
    assert not missing, f"figures in docs/{name} that no kept record gives: {missing}"


def test_unrecorded_passages_say_so_where_a_reader_sees_it():
    from lenszoo.page.notes import UNRECORDED_BEGIN, UNRECORDED_NOTE, unrecorded_spans

    notes = NOTES.read_text()
    spans = unrecorded_spans(notes)
    assert spans and notes.count(UNRECORDED_BEGIN) == len(spans)
    for start, end in spans:
        body = notes[start + len(UNRECORDED_BEGIN):end].lstrip()
        assert body.startswith(UNRECORDED_NOTE), body[:80]
    curriculum = next(notes[s:e] for s, e in spans if "curriculum" in notes[s:e])
    assert "to be replaced" in curriculum.splitlines()[1]


def test_the_figure_check_finds_a_figure_no_record_gives(values):
    """The check can fail: a changed figure, a figure of another architecture, a figure made up; an
    unrecorded passage passes only where it is marked."""
    assert unbacked("`c8_steerable` reaches 97.45 % on A", values) == []
    assert unbacked("`c8_steerable` reaches 97.61 % on A", values) == ["97.61"]
    assert unbacked("`etn` is 4.79 points above the seed's", values) == []
    assert unbacked("`etn` is 4.95 points above the seed's", values) == ["4.95"]
    assert unbacked("`c8_steerable` C-hst ran 46.2 minutes", values) == []
    assert unbacked("`resnet50` ran 46.2 minutes", values) == ["46.2"]  # c8's figure, not ResNet-50's
    # a figure made up: the first ratio no kept record gives (the records grow as seeds land)
    made_up = next(f"{whole}.{tenth}" for whole in range(8, 100) for tenth in range(10)
                   if unbacked(f"its minutes ran to {whole}.{tenth}× the budget", values))
    assert unbacked(f"its minutes ran to {made_up}× the budget", values) == [made_up]
    assert unbacked(f"<!-- unrecorded -->\n*No kept record.* {made_up}×\n<!-- /unrecorded -->", values) == []
    curriculum = "| `c8_steerable`, stage 1 + stage 2 on standard C-hst | 56.10 % | **44.18 %** | 0.628 |"
    assert "44.18" in unbacked(curriculum, values)  # the notes' own tables are not records
