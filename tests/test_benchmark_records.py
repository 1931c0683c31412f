"""Tables that benchmarks write into the docs come from their kept records, never typed by hand."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))  # docs_block, as the scripts import it
TABLES = [  # (benchmark script, its kept record, the page holding its block)
    ("robustness.py", REPO / "docs" / "results-data" / "robustness.json", REPO / "docs" / "predict.md"),
    ("bf16_parity.py", REPO / "docs" / "results-data" / "bf16_parity.json", REPO / "docs" / "predict.md"),
]


def benchmark(script):
    spec = importlib.util.spec_from_file_location(f"benchmark_{script[:-3]}", REPO / "benchmarks" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script, record, page", TABLES, ids=[t[0] for t in TABLES])
def test_a_pages_table_is_its_record_rendered(script, record, page):
    module = benchmark(script)
    from docs_block import read_block

    block = read_block(page, module.DOCS_BEGIN, module.DOCS_END)
    if not record.is_file():
        assert block.startswith("Not yet measured"), f"{page} shows a table but {record} is not kept"
        return
    assert block == module.markdown(json.loads(record.read_text(encoding="utf-8"))), \
        f"the table in {page} is not {record} rendered: run benchmarks/{script} --from-record {record} --write-docs {page}"


def test_the_manifests_bf16_parity_is_the_kept_records():
    record = REPO / "docs" / "results-data" / "bf16_parity.json"
    entries = json.loads((REPO / "weights_manifest.json").read_text())["weights"]
    rows = {r["weights_sha256"]: r["bf16_parity"] for r in json.loads(record.read_text())["rows"]} \
        if record.is_file() else {}
    for entry in entries:
        if "bf16_parity" in entry:
            assert rows.get(entry["sha256"]) == entry["bf16_parity"], f"{entry['folder']}: bf16_parity not from {record}"


def test_a_page_without_the_block_is_refused_untouched(tmp_path):
    from docs_block import write_block

    page = tmp_path / "page.md"
    page.write_text("no markers here\n")
    with pytest.raises(SystemExit, match="no <!-- x --> ... <!-- /x --> block"):
        write_block(page, "<!-- x -->", "<!-- /x -->", "table")
    assert page.read_text() == "no markers here\n"
    page.write_text("a\n<!-- x -->\nold\n<!-- /x -->\nb\n")
    write_block(page, "<!-- x -->", "<!-- /x -->", "new")
    assert page.read_text() == "a\n<!-- x -->\nnew\n<!-- /x -->\nb\n"


def test_parity_lands_only_on_the_weights_it_measured(tmp_path):
    module = benchmark("bf16_parity.py")
    manifest = tmp_path / "weights_manifest.json"
    released = json.loads((REPO / "weights_manifest.json").read_text())
    for entry in released["weights"]:
        entry.pop("bf16_parity", None)  # as before any measurement
    manifest.write_text(json.dumps(released, indent=2) + "\n")
    entries = released["weights"]
    first, second = entries[0], entries[1]
    parity = {"split": "holdout", "n": 30, "accuracy_change": 0.0, "max_probability_change": 0.001}
    rows = [{"arch": first["arch"], "task": first["task"], "dataset": first["dataset"], "tag": first.get("tag"),
             "weights_sha256": first["sha256"], "bf16_parity": parity},
            {"arch": second["arch"], "task": second["task"], "dataset": second["dataset"], "tag": second.get("tag"),
             "weights_sha256": "0" * 64, "bf16_parity": parity}]  # other weights than the manifest's
    said = module.write_manifest(manifest, {"rows": rows})
    after = json.loads(manifest.read_text())["weights"]
    assert after[0]["bf16_parity"] == parity and "bf16_parity" not in after[1]
    assert "written to 1 entries" in said and "not in it" in said


def test_added_rows_replace_the_same_weights_and_refuse_another_machine():
    module = benchmark("bf16_parity.py")
    head = {"format": "lenszoo-bf16-parity", "hardware": "cpu X", "native_bf16": False, "n_per_class": 1000,
            "torch": "2", "date": "2026-12-07"}
    row = lambda arch, tag, change: {"arch": arch, "task": "classify", "dataset": "B", "tag": tag,  # noqa: E731
                                     "accuracy_change": change}
    kept = {**head, "rows": [row("hnet", None, 0.1), row("hnet", "robust", 0.2)]}
    new = {**head, "rows": [row("hnet", "robust", 0.3), row("etn", "robust", 0.4)]}
    merged = module.add_rows(kept, new, "kept.json")
    assert [(r["arch"], r["tag"], r["accuracy_change"]) for r in merged["rows"]] == [
        ("etn", "robust", 0.4), ("hnet", None, 0.1), ("hnet", "robust", 0.3)]
    with pytest.raises(SystemExit, match="hardware"):
        module.add_rows(kept, {**new, "hardware": "cpu Y"}, "kept.json")


def _rows(losses, accuracies):
    return [{"epoch": i + 1, "images_seen": 4000 * (i + 1), "images_per_s": 60.0,
             "train": {"loss": loss}, "val": {"accuracy": acc}}
            for i, (loss, acc) in enumerate(zip(losses, accuracies))]


def test_bf16_training_parity_rule():
    compare = benchmark("bf16_train_parity.py").compare
    fp32 = _rows([0.90, 0.50], [0.80, 0.88])
    same = compare(fp32, _rows([0.92, 0.51], [0.79, 0.875]), "classify", n_val=3000, loss_limit=0.1, mae_limit=0.01)
    assert same["within_limits"] and same["final"]["change"] == -0.005
    assert 0.015 < same["final"]["limit"] < 0.02  # 2 SE of a difference of two ~88 % accuracies on 3,000 images
    loss_drift = compare(fp32, _rows([1.05, 0.51], [0.80, 0.88]), "classify", n_val=3000, loss_limit=0.1, mae_limit=0.01)
    assert not loss_drift["within_limits"]
    worse = compare(fp32, _rows([0.90, 0.50], [0.80, 0.84]), "classify", n_val=3000, loss_limit=0.1, mae_limit=0.01)
    assert not worse["within_limits"]
    with pytest.raises(ValueError, match="same images"):
        compare(fp32, _rows([0.9], [0.8]), "classify", n_val=3000, loss_limit=0.1, mae_limit=0.01)


def test_weights_trained_in_bf16_had_a_training_parity_check_on_their_arch():
    """bfloat16 training only after a kept parity record at equal images said it keeps parity."""
    checked = set()
    for path in (REPO / "docs" / "results-data").glob("bf16_train_parity-*.json"):
        record = json.loads(path.read_text())
        assert record["format"] == "lenszoo-bf16-train-parity"
        if record["within_limits"]:
            checked.add(record["arch"])
    for entry in json.loads((REPO / "weights_manifest.json").read_text())["weights"]:
        recipe = entry.get("recipe") or {}
        if "bf16" in (recipe.get("precision"), (recipe.get("compute") or {}).get("precision")):
            assert entry["arch"] in checked, f"{entry['folder']} trained in bf16 without a kept training parity check"


def test_robustness_add_to_replaces_only_the_weights_measured_again(tmp_path):
    add_rows = benchmark("robustness.py").add_rows
    head = {"format": "lenszoo-robustness", "version": 1, "split": "test", "n_per_class": 1000, "seed": 0,
            "nuisances": ["clean"]}
    kept = {**head, "rows": [{"arch": "c8_steerable", "dataset": "A", "tag": "clean", "accuracy": {"clean": 0.97}},
                             {"arch": "resnet50", "dataset": "A", "tag": "clean", "accuracy": {"clean": 0.93}},
                             {"arch": "resnet50", "dataset": "A", "tag": "robust", "accuracy": {"clean": 0.91}}]}
    new = {**head, "rows": [{"arch": "resnet50", "dataset": "A", "tag": "clean", "accuracy": {"clean": 0.95}}]}
    merged = add_rows(kept, new, tmp_path / "kept.json")
    assert [(r["arch"], r["tag"], r["accuracy"]["clean"]) for r in merged["rows"]] == [
        ("c8_steerable", "clean", 0.97), ("resnet50", "clean", 0.95), ("resnet50", "robust", 0.91)]
    with pytest.raises(SystemExit, match="n_per_class"):
        add_rows(kept, {**new, "n_per_class": 300}, tmp_path / "kept.json")
