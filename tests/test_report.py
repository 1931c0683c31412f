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
