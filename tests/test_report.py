"""`lenszoo report`: Markdown tables in the shape of the seed paper's Tables 1 and 2."""

import json

import pytest
from click.testing import CliRunner


def result_file(folder, arch, dataset, task="classify", **metrics):
    record = {"format": "lenszoo-evaluation", "format_version": 1, "arch": arch, "task": task,
              "dataset": dataset, "split": "test", "n": 6000 if task == "classify" else 2000,
              "metrics": metrics, "rotations": None}
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(record))
    return folder / "results.json"


def cli(*args):
    from lenszoo.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def table_rows(text, title):
    section = text.split(title, 1)[1].split("###", 1)[0]
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in section.splitlines()
            if line.startswith("|")]


@pytest.fixture
def results(tmp_path):
    result_file(tmp_path / "c8-A-s0", "c8_steerable", "A", accuracy=0.96, auc=0.996)
    result_file(tmp_path / "c8-A-s1", "c8_steerable", "A", accuracy=0.98, auc=0.998)
    result_file(tmp_path / "resnet-B", "resnet50", "B", accuracy=0.99, auc=0.9998)
    result_file(tmp_path / "c8-reg-B", "c8_steerable", "B", task="regress", mse=0.09, rmse=0.3, mae=0.2, bias=-0.01)
    return tmp_path


def test_tables_have_one_row_per_arch_and_dataset(results):
    result = cli("report", results)
    assert result.exit_code == 0, result.output
    classify = table_rows(result.output, "Table 1")
    assert classify[0][:4] == ["Architecture", "Dataset", "Accuracy", "AUC"]
    assert classify[2][:4] == ["c8_steerable", "A", "97.00 ± 1.41 %", "0.9970 ± 0.0014"]  # two seeds
    assert classify[2][-1] == "2"
    assert classify[3][:4] == ["resnet50", "B", "99.00 %", "0.9998"]
    regress = table_rows(result.output, "Table 2")
    assert regress[0][:6] == ["Architecture", "Dataset", "MSE", "RMSE", "MAE", "bias"]
    assert regress[2][:6] == ["c8_steerable", "B", "0.0900", "0.3000", "0.2000", "-0.0100"]


def test_paper_numbers_side_by_side(results, tmp_path):
    paper = tmp_path / "paper.json"
    paper.write_text(json.dumps({"source": "Seed paper, Tables 1-2", "classify": [
        {"arch": "c8_steerable", "dataset": "A", "accuracy": 0.95, "auc": 0.99},
        {"arch": "etn", "dataset": "A", "accuracy": 0.9}]}))
    out = tmp_path / "report" / "tables.md"
    result = cli("report", results, "--paper", paper, "--out", out)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    rows = table_rows(text, "Table 1")
    assert rows[0][4:6] == ["paper Accuracy", "paper AUC"]
    assert rows[2][4:6] == ["95.00 %", "0.9900"]
    assert rows[-1][:6] == ["etn", "A", "—", "—", "90.00 %", "—"]  # paper-only row
    assert "Seed paper, Tables 1-2" in text


def test_bad_inputs_are_one_line_errors(results, tmp_path):
    def error(*args):
        result = cli("report", *args)
        assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
        return result.output

    assert "does not exist" in error(tmp_path / "missing.json")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"accuracy": 1}))
    assert "not a lenszoo evaluation result" in error(other)
    paper = tmp_path / "paper.json"
    paper.write_text(json.dumps({"classify": [{"arch": "resnet50", "dataset": "B", "accuracy": 93.1}]}))
    assert "fraction" in error(results, "--paper", paper)
    (tmp_path / "empty").mkdir()
    assert "no results.json" in error(tmp_path / "empty")


def test_the_page_shows_the_released_weights_where_a_run_was_evaluated_twice(tmp_path):
    """fp32 weights evaluated before an fp16 release, the released fp16 copy after: the page
    reports the weights users get."""
    from lenszoo.report import load_results
    from lenszoo.report_page import pick

    for name, sha, accuracy in (("A-test", "a" * 64, 0.9277), ("A-test-fp16", "b" * 64, 0.9273)):
        path = result_file(tmp_path / name, "resnet50", "A", accuracy=accuracy, auc=0.98)
        record = json.loads(path.read_text())
        record["model"] = {"weights_sha256": sha}
        path.write_text(json.dumps(record))
    records = load_results([tmp_path])
    assert pick(records, released=frozenset({"b" * 64}))[0][("resnet50", "classify", "A")]["metrics"]["accuracy"] == 0.9273
    assert pick(records, released=frozenset({"a" * 64}))[0][("resnet50", "classify", "A")]["metrics"]["accuracy"] == 0.9277


def test_the_page_keeps_transfer_evaluations_apart_and_measures_margins_over_the_control(tmp_path):
    """A model trained on A and scored on C-euclid is the shortcut probe, not a C row of Table 1;
    every network's margin over radial_profile is reported with its standard error."""
    from lenszoo.report import load_results
    from lenszoo.report_page import build_page, pick

    result_file(tmp_path / "c8-A", "c8_steerable", "A", accuracy=0.975, auc=0.998, n=15000)
    result_file(tmp_path / "rp-A", "radial_profile", "A", accuracy=0.92, auc=0.98, n=15000)
    probe = result_file(tmp_path / "c8-A-on-C", "c8_steerable", "C-euclid", accuracy=0.35, auc=0.52,
                        recall={"no_sub": 0.9, "cdm": 0.1, "axion": 0.05})
    record = json.loads(probe.read_text())
    record["trained_on"] = "A"
    probe.write_text(json.dumps(record))
    records = load_results([tmp_path])
    main, _ = pick(records)
    assert set(main) == {("c8_steerable", "classify", "A"), ("radial_profile", "classify", "A")}
    page = build_page(records, paper=None, figures=tmp_path / "figures", page=tmp_path / "results.md")
    margins = table_rows(page, "margin over `radial_profile`")
    assert margins[2][:7] == ["classify", "A", "`c8_steerable`", "not recorded", "97.50 %", "92.00 %", "+5.50 points"]
    assert margins[2][7].startswith("0.") and margins[2][-1] == "no ranking: needs 2 seeds a side"
    probed = table_rows(page, "the shortcut probe")
    assert probed[2][:9] == ["classify", "`c8_steerable`", "A", "C-euclid", "test", "97.50 %", "35.00 %", "0.520",
                             "0.90 / 0.10 / 0.05"]
    assert "| C-euclid |" not in page.split("## Table 2")[0]  # not a row of Table 1


def test_the_shortcut_probe_puts_each_model_beside_its_own_figure_not_a_later_releases(tmp_path):
    """Weights probed on C, then replaced by a longer-trained release: the probe row shows the
    probed weights' own figure, never the new release's beside the old probe."""
    from lenszoo.report import load_results
    from lenszoo.report_page import build_page

    old = seed_record(tmp_path / "r35", "resnet50", "A", seed=0, sha="d", accuracy=0.92, epochs=5, epoch_size=7000)
    seed_record(tmp_path / "r192", "resnet50", "A", seed=0, sha="f", accuracy=0.94)
    probe = result_file(tmp_path / "r35-on-C", "resnet50", "C-euclid", accuracy=0.3357, auc=0.501)
    record = json.loads(probe.read_text())
    record.update(trained_on="A", model=old["model"])
    probe.write_text(json.dumps(record))
    page = build_page(load_results([tmp_path]), paper=None, figures=tmp_path / "figures",
                      page=tmp_path / "results.md", released={"f" * 64: {}})
    probed = table_rows(page, "the shortcut probe")
    assert probed[2][:7] == ["classify", "`resnet50`", "A", "C-euclid", "holdout", "92.00 %", "33.57 %"]


def test_clean_tagged_weights_are_the_ranked_row_and_other_tags_rows_of_their_own(tmp_path):
    """The page ranks the seed protocol's weights, released as ARCH.clean: evaluated under that tag
    or before it, they are one row; robust weights are a row of their own."""
    from lenszoo.report import load_results

    for name, tag in (("before-tag", None), ("clean", "clean"), ("robust", "robust")):
        record = seed_record(tmp_path / name, "resnet50", "A", seed=0, sha=name[0], accuracy=0.9)
        record["tag"] = tag
        (tmp_path / name / "results.json").write_text(json.dumps(record))
    assert sorted(r["arch"] for r in load_results([tmp_path])) == ["resnet50", "resnet50", "resnet50.robust"]


def test_the_page_regenerates_from_its_kept_records_alone(tmp_path):
    """`--records` keeps every evaluation the page shows (with its plots) beside the page: passing
    that folder back gives the same page after the run folders are gone, and the folder is only
    ever rewritten by lenszoo report."""
    import shutil

    runs = tmp_path / "runs"
    result_file(runs / "c8-A", "c8_steerable", "A", accuracy=0.975, auc=0.998, n=15000)
    (runs / "c8-A" / "roc_curves.png").write_bytes(b"\x89PNG fake plot")
    record = json.loads((runs / "c8-A" / "results.json").read_text())
    record["plots"] = ["roc_curves.png"]
    (runs / "c8-A" / "results.json").write_text(json.dumps(record))
    result_file(runs / "rp-A", "radial_profile", "A", accuracy=0.92, auc=0.98, n=15000)
    result_file(runs / "old-small", "radial_profile", "A", accuracy=0.5, auc=0.5, n=30)  # not on the page
    kept = tmp_path / "docs" / "results-data"

    def page(*sources, records=kept):
        out = tmp_path / "docs" / "results.md"
        result = cli("report", *sources, "--page", out, "--records", records)
        assert result.exit_code == 0, result.output
        return out.read_text().split("\n", 3)[3]  # below the line naming the command

    first = page(runs)
    names = sorted(p.name for p in kept.iterdir())
    assert names == ["c8_steerable-classify-A-test.results.json", "c8_steerable-classify-A-test.roc_curves.png",
                     "index.json", "radial_profile-classify-A-test.results.json"]
    shutil.rmtree(runs)
    (tmp_path / "docs" / "results-figures" / "c8_steerable-classify-A-roc_curves.png").unlink()
    assert page(kept) == first
    assert (tmp_path / "docs" / "results-figures" / "c8_steerable-classify-A-roc_curves.png").read_bytes() == \
        b"\x89PNG fake plot"
    assert sorted(p.name for p in kept.iterdir()) == names  # kept records passed back keep their names

    # a record the page no longer shows is removed; a file of the user's is never touched
    (kept / "notes.txt").write_text("mine")
    (kept / "radial_profile-classify-A-test.results.json").unlink()
    page(kept)
    assert (kept / "notes.txt").read_text() == "mine"
    assert not (kept / "radial_profile-classify-A-test.results.json").exists()

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("x")
    result = cli("report", kept, "--page", tmp_path / "docs" / "results.md", "--records", foreign)
    assert result.exit_code == 1 and "never replaces" in result.output and len(result.output.strip().splitlines()) == 1
    assert (foreign / "thesis.tex").read_text() == "x"
    result = cli("report", kept, "--records", tmp_path / "new")
    assert result.exit_code == 1 and "--page" in result.output


# -- seeds, the ranking rule, notes under their tables, seed bands, portable records (issue 29) --------
def seed_record(folder, arch, dataset, *, seed, sha, accuracy, split="holdout", epochs=16, epoch_size=12000,
                n=15000, history=None, task="classify", **metrics):
    record = {"format": "lenszoo-evaluation", "format_version": 1, "arch": arch, "task": task, "dataset": dataset,
              "split": split, "n": n, "trained_on": dataset,
              "metrics": {"accuracy": accuracy, "auc": 0.99, "n": n, **metrics} if task == "classify" else metrics,
              "model": {"weights_sha256": sha * 64, "images_seen": epochs * epoch_size, "history": history,
                        "recipe": {"seed": seed, "epochs": epochs, "epoch_size": epoch_size, "lr": 1e-3}}}
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(record))
    return record


def curve(final, epochs=4, size=12000, minutes=1.0):
    return [{"epoch": e, "images_seen": e * size, "train_minutes": minutes * e,
             "val": {"accuracy": final - 0.02 * (epochs - e)}} for e in range(1, epochs + 1)]


@pytest.fixture
def seeds(tmp_path):
    """c8_steerable A: 2 seeds on holdout (seed 0 released, also on test); ResNet-50 A at two budgets."""
    runs = tmp_path / "runs"
    seed_record(runs / "c8-s0", "c8_steerable", "A", seed=0, sha="a", accuracy=0.975, history=curve(0.97))
    seed_record(runs / "c8-s0-test", "c8_steerable", "A", seed=0, sha="a", accuracy=0.9749, split="test")
    seed_record(runs / "c8-s1", "c8_steerable", "A", seed=1, sha="b", accuracy=0.979, history=curve(0.98))
    for seed, accuracy in enumerate((0.925, 0.93, 0.92)):  # the 35,000-image recipe, three seeds
        seed_record(runs / f"r35-s{seed}", "resnet50", "A", seed=seed, sha="cde"[seed], accuracy=accuracy,
                    epochs=5, epoch_size=7000)
    for seed, accuracy in enumerate((0.99, 0.95)):  # the 192,000-image recipe: seeds far apart
        seed_record(runs / f"r192-s{seed}", "resnet50", "A", seed=seed, sha="fg"[seed], accuracy=accuracy)
    paper = tmp_path / "paper.json"
    paper.write_text(json.dumps({"classify": [{"arch": "c8_steerable", "dataset": "A", "accuracy": 0.9902}]}))
    return tmp_path, runs, paper


def page_of(tmp_path, *args):
    out = tmp_path / "docs" / "results.md"
    result = cli("report", *args, "--page", out)
    assert result.exit_code == 0, result.output
    return out.read_text()


def test_table_1_shows_the_released_figure_beside_the_seed_mean_and_how_many_seeds(seeds, monkeypatch):
    tmp_path, runs, paper = seeds
    from lenszoo.report import load_results
    from lenszoo.report_page import build_page

    page = build_page(load_results([runs]), paper={"source": None, "rows": {("classify", "c8_steerable", "A"):
                                                                           {"accuracy": 0.9902}}},
                      figures=tmp_path / "f", page=tmp_path / "results.md", released=frozenset({"a" * 64, "c" * 64}))
    rows = {(r[1], r[2]): r for r in table_rows(page, "## Table 1")[2:] if len(r) == 11}
    c8 = rows[("`c8_steerable`", "192,000 (16 × 12,000)")]
    assert c8[3:9] == ["holdout", "97.50 %", "97.70 ± 0.28 %", "2 of 3", "99.02 %", "-1.32"]  # never 3 of 3
    assert rows[("`resnet50`", "35,000 (5 × 7,000)")][3:7] == ["holdout", "92.50 %", "92.50 ± 0.50 %", "3 of 3"]
    assert rows[("`resnet50`", "192,000 (16 × 12,000)")][4:7] == ["—", "97.00 ± 2.83 %", "2 of 3"]
    assert "97.49" not in page.split("## Table 2")[0]  # the test split's figure is not the row's: holdout is
    compute = {r[2]: r for r in table_rows(page, "what each released checkpoint cost")[2:] if len(r) == 11}
    assert compute["`c8_steerable`"][3:7] == ["192,000", "not recorded", "not recorded", "not recorded"]
    entry = {"recipe": {"compute": {"minutes_to_best": 12.3, "minutes_total": 20.0, "images_to_best": 192000,
                                    "images_total": 192000, "hardware": "x", "threads": 2, "precision": "fp32"}}}
    page = build_page(load_results([runs]), paper=None, figures=tmp_path / "f", page=tmp_path / "results.md",
                      released={"a" * 64: entry})  # the manifest's record of the released weights
    compute = {r[2]: r for r in table_rows(page, "what each released checkpoint cost")[2:] if len(r) == 11}
    assert compute["`c8_steerable`"][3:8] == ["192,000", "192,000", "12.3", "20.0", "x"]


def test_a_ranking_needs_the_difference_of_seed_means_past_the_seed_spread_and_2_se(seeds):
    from lenszoo.page.stats import rank

    assert rank(0.05, se=0.002, spread=0.005) == "better"
    assert rank(-0.05, se=0.002, spread=0.005) == "worse"
    assert rank(0.004, se=0.001, spread=0.005) == "no ranking: within the seed spread"
    assert rank(0.004, se=0.003, spread=0.001) == "no ranking: within 2 SE"
    assert rank(0.5, se=0.001, spread=None) == "no ranking: needs 2 seeds a side"

    tmp_path, runs, _ = seeds
    claims = {r[3]: r for r in table_rows(page_of(tmp_path, runs), "the seed's claim")[2:] if len(r) == 9}
    equal_time = claims["192,000 (16 × 12,000) / 35,000 (5 × 7,000)"]
    assert equal_time[4] == "+5.20 points" and equal_time[6] == "0.50" and equal_time[7:] == ["2 / 3", "better"]
    equal_images = claims["192,000 (16 × 12,000) / 192,000 (16 × 12,000)"]  # 0.7 points, seeds 2.8 apart
    assert equal_images[4] == "+0.70 points" and equal_images[8] == "no ranking: within the seed spread"


def test_notes_sit_under_the_table_they_name_and_the_rest_follows_the_tables(seeds):
    tmp_path, runs, _ = seeds
    notes = tmp_path / "notes.md"
    notes.write_text("## claim\n\nOn the claim.\n\n## Lab notebook: an old run\n\nIt scored well.\n\n"
                     "## classification\n\nOn Table 1.\n\n```console\n## not a heading\n```\n")
    page = page_of(tmp_path, runs, "--notes", notes)
    sections = page.split("\n## ")
    assert "On Table 1." in sections[1] and sections[1].startswith("Table 1: classification")
    assert "```console\n## not a heading\n```" in page.split("## Table 2:")[0]  # not a heading in a code block
    assert "On the claim." in next(s for s in sections if s.startswith("Table 4:"))
    assert sections[-1].startswith("Lab notebook: an old run") and page.index("| ") < page.index("On Table 1.")

    for text, message in (("Before any table.\n\n## claim\n\nx\n", "text before its first '## SECTION' heading"),
                          ("## claim\n\nx\n\n## Claim\n\ny\n", "two '## Claim' sections")):
        notes.write_text(text)
        result = cli("report", runs, "--page", tmp_path / "docs" / "other.md", "--notes", notes)
        assert result.exit_code == 1 and message in result.output and len(result.output.strip().splitlines()) == 1


def test_the_learning_curves_show_each_architectures_seed_band(seeds):
    from lenszoo.page.figures import curve_band, learning_curves
    from lenszoo.page.select import seed_rows
    from lenszoo.report import load_results

    images, mean, low, high = curve_band([curve(0.97), curve(0.98)], "accuracy")
    assert images == [12000, 24000, 36000, 48000]
    assert mean[-1] == pytest.approx(0.975) and (low[-1], high[-1]) == (0.97, 0.98)
    assert curve_band([curve(0.97), curve(0.98, size=10000)], "accuracy") is None  # no shared point
    tmp_path, runs, _ = seeds
    rows = seed_rows(load_results([runs]), frozenset({"a" * 64}))
    drawn = learning_curves(rows, tmp_path / "curves.png")
    assert ("classify", "A", "c8_steerable", 2) in drawn  # a band of two seeds
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    key = next(k for k in rows if k[:3] == ("c8_steerable", "classify", "A"))
    first = rows[key][0]
    unrecorded = type(first)(first.arch, first.task, first.dataset, {"epochs": 99}, first.split, dict(first.seeds))
    rows[key] = [unrecorded, *rows[key]]  # a recipe with more seeds and no training history comes first
    assert ("classify", "A", "c8_steerable", 2) in learning_curves(rows, tmp_path / "curves.png")


def test_kept_records_name_files_relative_to_their_repository(tmp_path):
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    record = seed_record(repo / "runs" / "c8" / "eval" / "A-holdout", "c8_steerable", "A", seed=0, sha="a",
                         accuracy=0.97)
    record["model"].update(kind="run", path=str(repo / "runs" / "c8"))
    record["model"]["recipe"]["init"] = {"from": str(repo / "weights" / "c8"), "weights_sha256": "e" * 64}
    record["data"] = {"source": "stored", "path": str(tmp_path / "scratch" / "A-holdout")}  # outside: as it was
    (repo / "runs" / "c8" / "eval" / "A-holdout" / "results.json").write_text(json.dumps(record))
    kept = repo / "docs" / "results-data"
    assert cli("report", repo / "runs", "--page", repo / "docs" / "results.md", "--records", kept).exit_code == 0
    saved = json.loads((kept / "c8_steerable-classify-A-holdout.results.json").read_text())
    assert saved["model"]["path"] == "runs/c8" and saved["model"]["recipe"]["init"]["from"] == "weights/c8"
    assert saved["data"]["path"] == str(tmp_path / "scratch" / "A-holdout")


def test_evaluate_names_files_inside_the_working_directory_by_their_relative_paths(tmp_path, monkeypatch):
    import shutil
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(tmp_path)
    shutil.copytree(repo / "weights" / "radial_profile-classify-A", tmp_path / "weights" / "rp")
    assert cli("simulate", "--dataset", "A", "--split", "test", "--n-per-class", 2, "--out", "data/A-test",
               "-q").exit_code == 0
    result = cli("evaluate", "./weights/rp", "--data", tmp_path / "data" / "A-test", "--out", "eval/rp")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "eval" / "rp" / "results.json").read_text())
    assert record["model"]["path"] == "weights/rp" and record["data"]["path"] == "data/A-test"
