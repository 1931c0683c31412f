"""`predict --precision auto|fp32|bf16` (issue 32, item 1): auto follows the hardware and each set of
weights' measured bf16 parity; rows say which precision scored them; a table keeps one precision.

bf16 on an AVX2-only CPU is emulated (slow), so the images here are few and the models tiny.
"""

import csv
import json
import shutil

import numpy as np
import pytest
import torch

import lenszoo
from lenszoo.errors import LenszooError
from lenszoo.inference.scorer import BF16_LIMITS, bf16_keeps_parity, choose_precision

from .probes import ProbePlugin, registered
from .test_bad_input import REPO, cli, one_line_error
from .zoo_entries import untagged

MODEL = ["radial_profile", "--dataset", "A"]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(32)
    yy, xx = np.mgrid[:64, :64] - 31.5
    ring = np.exp(-((np.hypot(yy, xx) - 14) ** 2) / 8)
    return (ring[None] * rng.uniform(0.5, 2, (6, 1, 1)) + rng.normal(0, 0.05, (6, 64, 64))).astype(np.float32)


@pytest.fixture
def stack(tmp_path, images):
    np.save(tmp_path / "x.npy", images)
    return tmp_path / "x.npy"


@pytest.fixture(scope="module")
def probe_model():
    with registered(ProbePlugin("probe"), "probe-plugin"):
        torch.manual_seed(0)
        yield lenszoo.create_model("probe", task="classify").eval()


def read(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def predict(inputs, out, *options):
    return cli("predict", *MODEL, inputs, "--out", out, "--quiet", "--workers", 0, *options)


def native(monkeypatch, flags):
    monkeypatch.setattr("lenszoo.runtime.cpu_flags", lambda: set(flags))


# -- auto follows the hardware ------------------------------------------------------------------------
@pytest.mark.parametrize("flags, expected", [
    ({"avx2", "fma"}, "fp32"),                         # this project's AVX2-only EPYC: bf16 would be emulated
    ({"avx2", "avx512f", "avx512_bf16"}, "bf16"),
    ({"avx2", "amx_bf16", "amx_tile"}, "bf16"),
    (set(), "fp32"),                                   # no /proc/cpuinfo (not Linux)
])
def test_auto_picks_bf16_only_where_the_cpu_has_it_natively(probe_model, monkeypatch, flags, expected):
    native(monkeypatch, flags)
    assert choose_precision("auto", probe_model, CPU)[0] == expected
    assert choose_precision("fp32", probe_model, CPU)[0] == "fp32"  # asked for: taken as it is
    assert choose_precision("bf16", probe_model, CPU)[0] == "bf16"
    assert choose_precision("auto", probe_model, CPU, engine="onnxruntime")[0] == "fp32"


def test_auto_is_fp32_on_this_machine_unless_its_cpu_has_native_bfloat16(probe_model):
    from lenszoo.runtime import BF16_CPU_FLAGS, cpu_flags

    has_it = bool(set(BF16_CPU_FLAGS) & cpu_flags())
    assert choose_precision("auto", probe_model, CPU)[0] == ("bf16" if has_it else "fp32")
    assert lenszoo.predict(probe_model, np.zeros((1, 64, 64), np.float32))[0]["precision"] == \
        ("bf16" if has_it else "fp32")


def test_cpu_flags_are_read_from_proc_cpuinfo(monkeypatch, tmp_path):
    from pathlib import Path

    import lenszoo.runtime as runtime

    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse avx2 avx512_bf16 amx_tile\n\n")
    real_path = Path
    monkeypatch.setattr(runtime, "Path", lambda p: fake if p == "/proc/cpuinfo" else real_path(p))
    assert {"avx2", "avx512_bf16", "amx_tile"} <= runtime.cpu_flags()
    assert runtime.native_bf16(CPU)


# -- the per-model fallback ----------------------------------------------------------------------------
@pytest.mark.parametrize("parity, keeps", [
    (None, True),                                                     # never measured: the hardware decides
    ({"accuracy_change": -0.0004, "max_probability_change": 0.01}, True),
    ({"accuracy_change": -0.0012}, False),                           # 0.12 point: beyond 0.1
    ({"accuracy_change": 0.002}, False),                             # a change either way is no parity
    ({"mae_change": 0.004}, True),
    ({"mae_change": -0.006}, False),                                 # beyond 0.005 dex
])
@pytest.mark.parametrize("where", ["manifest", "config"])
def test_weights_whose_bf16_parity_is_off_keep_fp32_under_auto(probe_model, monkeypatch, parity, keeps, where):
    native(monkeypatch, {"avx512_bf16"})
    config = dict(probe_model.lenszoo_config)
    if where == "manifest":  # attached at load from the manifest entry
        config["released"] = {"sha256": "0" * 64, "bf16_parity": parity}
    else:
        config["bf16_parity"] = parity
    monkeypatch.setattr(probe_model, "lenszoo_config", config)
    assert bf16_keeps_parity(parity) is keeps
    precision, why = choose_precision("auto", probe_model, CPU)
    assert precision == ("bf16" if keeps else "fp32")
    assert keeps or "parity" in why
    assert choose_precision("bf16", probe_model, CPU)[0] == "bf16"  # asked for explicitly: given
    assert set(BF16_LIMITS) == {"accuracy_change", "mae_change"}


def test_a_manifest_entry_carries_its_bf16_parity_to_the_loaded_model(tmp_path, monkeypatch, images):
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "weights" / "radial_profile-classify-A", repo / "weights" / "radial_profile-classify-A")
    manifest = json.loads((REPO / "weights_manifest.json").read_text())
    entry = next(e for e in manifest["weights"] if (e["arch"], e["task"], e["dataset"], e.get("tag")) ==
                 ("radial_profile", "classify", "A", "clean"))
    entry = untagged(entry)  # the only weights of this zoo
    entry["bf16_parity"] = {"split": "test", "n": 3000, "accuracy_change": -0.02, "max_probability_change": 0.1}
    manifest["weights"] = [entry]
    (repo / "weights_manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("LENSZOO_MANIFEST", str(repo / "weights_manifest.json"))
    model = lenszoo.load("radial_profile", dataset="A")
    assert model.lenszoo_config["released"]["bf16_parity"]["accuracy_change"] == -0.02
    native(monkeypatch, {"amx_bf16"})
    assert choose_precision("auto", model, CPU)[0] == "fp32"
    assert {r["precision"] for r in lenszoo.predict(model, images[:2])} == {"fp32"}
    entry["bf16_parity"] = {"accuracy_change": "small"}
    (repo / "weights_manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(LenszooError, match="bf16_parity.accuracy_change"):
        lenszoo.load("radial_profile", dataset="A")


# -- bf16 scores, and rows say so -----------------------------------------------------------------------
def test_bf16_rows_are_fp32_rows_to_bfloat16_accuracy(probe_model, images):
    fp32 = lenszoo.predict(probe_model, images, precision="fp32")
    bf16 = lenszoo.predict(probe_model, images, precision="bf16", tta=True)
    plain_bf16 = lenszoo.predict(probe_model, images, precision="bf16")
    assert {r["precision"] for r in fp32} == {"fp32"} and {r["precision"] for r in bf16 + plain_bf16} == {"bf16"}
    columns = ["p_no_sub", "p_cdm", "p_axion"]
    a, b = (np.array([[r[c] for c in columns] for r in rows]) for rows in (fp32, plain_bf16))
    assert np.abs(a - b).max() < 0.02  # bfloat16 keeps 8 bits of mantissa
    assert np.abs(b.sum(1) - 1).max() < 1e-5  # softmax of float32 outputs: still probabilities


def test_the_table_records_the_precision_and_resume_keeps_one(tmp_path, stack):
    out = tmp_path / "s.csv"
    result = predict(stack, out, "--precision", "bf16", "--batch-size", 4)
    assert result.exit_code == 0, result.output
    assert [r["precision"] for r in read(out)] == ["bf16"] * 6
    assert "bf16" in result.stderr.strip().splitlines()[-1]
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:5]))  # killed after the first batch
    before = out.read_bytes()
    for other in ("fp32", "auto"):  # auto is fp32 on a CPU without native bfloat16
        if other == "auto" and choose_precision("auto", lenszoo.load("radial_profile", dataset="A"), CPU)[0] != "fp32":
            continue
        one_line_error(predict(stack, out, "--resume", "--precision", other), "scored in bf16",
                       "--precision bf16")
        assert out.read_bytes() == before
    resumed = predict(stack, out, "--resume", "--precision", "bf16")
    assert resumed.exit_code == 0, resumed.output
    assert [r["precision"] for r in read(out)] == ["bf16"] * 6


def test_a_table_from_before_the_precision_column_is_named_as_such(tmp_path, stack):
    old = tmp_path / "old.csv"
    old.write_text("source,index,p_no_sub,p_cdm,p_axion,predicted_class,flags,tta,model,model_sha256\n")
    before = old.read_bytes()
    one_line_error(predict(stack, old, "--resume"), "earlier lenszoo (without the precision column)")
    assert old.read_bytes() == before


@pytest.mark.parametrize("forge", ["damaged", "other"])
def test_a_row_of_another_precision_in_the_table_is_refused(tmp_path, stack, forge):
    out = tmp_path / "s.csv"
    assert predict(stack, out, "--precision", "fp32").exit_code == 0
    lines = out.read_text().splitlines(keepends=True)
    header = lines[0].strip().split(",")
    fields = lines[-1].rstrip("\n").split(",")
    fields[header.index("precision")] = "fp16" if forge == "damaged" else "bf16"
    out.write_text("".join(lines[:-1]) + ",".join(fields) + "\n")
    before = out.read_bytes()
    fragment = "is not a whole row" if forge == "damaged" else "scored in bf16"
    one_line_error(predict(stack, out, "--resume", "--precision", "fp32"), fragment)
    assert out.read_bytes() == before


def test_parts_scored_in_different_precisions_are_not_merged(tmp_path, stack):
    out = tmp_path / "t.csv"
    np.save(tmp_path / "y.npy", np.load(stack)[:2])
    for rank, precision in ((0, "fp32"), (1, "bf16")):
        result = cli("predict", *MODEL, stack, tmp_path / "y.npy", "--out", out, "--quiet", "--workers", 0,
                     "--precision", precision, env={"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
        assert result.exit_code == 0, result.output
    one_line_error(cli("predict-merge", "--out", out), "different precisions")
    assert not out.exists()


# -- the parity script ----------------------------------------------------------------------------------
def test_the_parity_script_measures_a_tiny_model_and_fills_the_docs_block(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bf16_parity", REPO / "benchmarks" / "bf16_parity.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    page = tmp_path / "predict.md"
    page.write_text(f"# page\n\n{script.DOCS_BEGIN}\nold table\n{script.DOCS_END}\n\nafter\n")
    record = tmp_path / "parity.json"
    script.main(["--archs", "radial_profile", "--datasets", "A", "--n-per-class", "2", "--record", str(record),
                 "--write-docs", str(page), "--data-root", str(tmp_path / "none")])
    saved = json.loads(record.read_text())
    assert saved["format"] == "lenszoo-bf16-parity" and saved["native_bf16"] in (True, False)
    rows = {row["task"]: row for row in saved["rows"]}
    assert set(rows) == {"classify", "regress"}
    assert rows["classify"]["n"] == 6 and rows["regress"]["n"] == 2 and rows["classify"]["split"] == "test"
    assert rows["classify"]["bf16_parity"]["max_probability_change"] >= 0
    assert rows["regress"]["bf16_parity"]["mae_change"] == rows["regress"]["mae_change"]
    for row in rows.values():
        assert row["within_limits"] == bf16_keeps_parity(row["bf16_parity"])
    text = page.read_text()
    assert "old table" not in text and text.endswith("\n\nafter\n") and "| `radial_profile` | regress | A | 2 test" in text

