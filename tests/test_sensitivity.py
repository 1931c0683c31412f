"""Sensitivity curves: per substructure-fraction bin metrics, the evaluate block, the page section."""

import json
import math

import numpy as np
import pytest

from lenszoo.errors import LenszooError
from lenszoo.page.sensitivity import merge_bins, sensitivity_section
from lenszoo.sensitivity import DEFAULT_BINS_PERCENT, hanley_mcneil_se, sensitivity, smallest_fraction_detected
from tests.probes import ProbePlugin, registered
from tests.test_bad_input import cli, one_line_error


def synthetic(n=6000, seed=0, span=(0.002, 0.05), perfect_from=0.01):
    """Balanced labels, fractions uniform over ``span``; a perfect scorer for f >= ``perfect_from``, a
    random one below."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    fractions = rng.uniform(*span, n)
    outputs = rng.normal(size=(n, 3))
    good = fractions >= perfect_from
    outputs[good] = 0.0
    outputs[good, labels[good]] = 4.0
    return labels, outputs, fractions


# -- per-bin metrics --------------------------------------------------------------------------------
def test_rank_auc_is_sklearns_auc_with_ties():
    from sklearn.metrics import roc_auc_score

    from lenszoo.metrics import rank_auc

    rng = np.random.default_rng(3)
    pos, neg = rng.integers(0, 5, 40).astype(float), rng.integers(0, 4, 55).astype(float)  # many ties
    expected = roc_auc_score(np.r_[np.ones(40), np.zeros(55)], np.r_[pos, neg])
    assert rank_auc(pos, neg) == pytest.approx(expected, abs=1e-12)
    assert rank_auc(pos, []) is None and rank_auc([np.nan], neg) is None


def test_perfect_scorer_in_high_bins_random_in_low_bins():
    labels, outputs, fractions = synthetic()
    block = sensitivity(labels, outputs, fractions)
    bins = block["bins"]
    assert [b["fraction_percent"] for b in bins] == [[0.2, 0.5], [0.5, 1.0], [1.0, 2.0], [2.0, 5.0]]
    assert sum(b["n"] for b in bins) == block["n_known"] == 6000 and block["n_outside_bins"] == 0
    for b in bins:
        inside = (fractions >= b["fraction_percent"][0] / 100) & (fractions < b["fraction_percent"][1] / 100)
        assert b["n"] == inside.sum()
        for pair, positive in (("cdm_vs_no_sub", 1), ("axion_vs_no_sub", 2)):
            entry = b[pair]
            assert (entry["n_pos"], entry["n_neg"]) == ((inside & (labels == positive)).sum(),
                                                         (inside & (labels == 0)).sum())
            if b["fraction_percent"][0] >= 1:
                assert entry["auc"] == 1.0 and entry["se"] == 0.0
            else:  # random: 0.5 within 4 standard errors, the error of the right size
                assert abs(entry["auc"] - 0.5) < 4 * entry["se"]
                assert 0.02 < entry["se"] < 0.08
        expected_accuracy = 1.0 if b["fraction_percent"][0] >= 1 else 1 / 3
        assert abs(b["accuracy"] - expected_accuracy) <= max(4 * b["accuracy_se"], 1e-12)
    assert block["smallest_fraction_detected"] == {"cdm_vs_no_sub": 1.0, "axion_vs_no_sub": 1.0}
    assert block["detection_auc"] == 0.75

    # probabilities give the same AUCs as logits (p_cdm / (p_cdm + p_no_sub) orders as the logit difference)
    probs = np.exp(outputs) / np.exp(outputs).sum(1, keepdims=True)
    again = sensitivity(labels, probs, fractions, logits=False)
    for a, b in zip(block["bins"], again["bins"]):
        assert a["cdm_vs_no_sub"]["auc"] == pytest.approx(b["cdm_vs_no_sub"]["auc"])
        assert a["accuracy"] == b["accuracy"]


def test_bins_are_configurable_and_unknown_fractions_are_counted():
    labels, outputs, fractions = synthetic(n=600)
    fractions[:30] = np.nan
    block = sensitivity(labels, outputs, fractions, bins_percent="1,3")
    assert [b["fraction_percent"] for b in block["bins"]] == [[1.0, 3.0]]
    assert block["n_unknown"] == 30
    assert block["n_outside_bins"] == block["n_known"] - block["bins"][0]["n"] > 0
    assert block["smallest_fraction_detected"]["cdm_vs_no_sub"] == 1.0
    assert sensitivity(labels, outputs, np.full(600, np.nan)) is None  # A, B, older datasets: no block


@pytest.mark.parametrize("aucs, expected", [
    ([0.9, 0.6, 0.8, 0.95], 1.0),   # a dip: detection starts above it
    ([0.8, 0.76, 0.9, 0.99], 0.2),  # every bin
    ([0.5, 0.6, 0.7, 0.74], None),  # none reaches the threshold
    ([0.5, 0.8, 0.9, None], 0.5),   # an unmeasured bin says nothing
    ([0.9, 0.9, 0.9, 0.6], None),   # the highest bin fails
])
def test_smallest_fraction_detected(aucs, expected):
    edges = DEFAULT_BINS_PERCENT
    bins = [{"fraction_percent": [lo, hi], "cdm_vs_no_sub": {"auc": auc}}
            for lo, hi, auc in zip(edges[:-1], edges[1:], aucs)]
    assert smallest_fraction_detected(bins) == expected


def test_hanley_mcneil_se_is_the_mann_whitney_error_at_chance():
    # under the null, HM reduces to the exact Mann-Whitney standard error sqrt((n1 + n2 + 1) / (12 n1 n2))
    assert hanley_mcneil_se(0.5, 100, 80) == pytest.approx(math.sqrt(181 / (12 * 100 * 80)))
    assert hanley_mcneil_se(1.0, 10, 10) == 0.0 and hanley_mcneil_se(None, 10, 10) is None


def test_merging_two_sets_adds_their_pairs():
    a = sensitivity(*synthetic(n=900, seed=1, span=(0.002, 0.02)))
    b = sensitivity(*synthetic(n=600, seed=2, span=(0.015, 0.05)))
    merged = {tuple(m["fraction_percent"]): m for m in merge_bins([a, b])}
    one = a["bins"][2]["cdm_vs_no_sub"]
    two = b["bins"][2]["cdm_vs_no_sub"]  # both sets have images with f in 1-2 %
    pairs = one["n_pos"] * one["n_neg"] + two["n_pos"] * two["n_neg"]
    expected = (one["auc"] * one["n_pos"] * one["n_neg"] + two["auc"] * two["n_pos"] * two["n_neg"]) / pairs
    assert merged[(1.0, 2.0)]["cdm_vs_no_sub"]["auc"] == pytest.approx(expected)
    assert merged[(1.0, 2.0)]["n"] == a["bins"][2]["n"] + b["bins"][2]["n"]
    assert merged[(0.2, 0.5)]["n"] == a["bins"][0]["n"]  # only the standard set reaches that low


# -- lenszoo evaluate --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def c_hst_test(tmp_path_factory):
    from lenszoo.data import simulate_dataset

    path = tmp_path_factory.mktemp("data") / "C-hst-test"
    simulate_dataset("C-hst", "test", 2, path, seed=3, progress=False)
    return path


def probe_checkpoint(folder, dataset):
    import torch

    import lenszoo
    from lenszoo.checkpoint import save_checkpoint
    from lenszoo.data import NORMALIZATION

    torch.manual_seed(0)
    return save_checkpoint(folder, lenszoo.create_model("sens_probe", task="classify"), dataset=dataset,
                           normalization=NORMALIZATION)


@pytest.fixture
def probe():
    with registered(ProbePlugin("sens_probe"), "sensitivity-probe"):
        yield


def test_evaluate_writes_the_sensitivity_block_for_stored_c_data(probe, tmp_path, c_hst_test):
    import torch

    from lenszoo.checkpoint import load_checkpoint
    from lenszoo.data import StoredDataset
    from lenszoo.files import sha256_file

    folder = probe_checkpoint(tmp_path / "ckpt", "C-hst")
    out = tmp_path / "eval"
    result = cli("evaluate", folder, "--data", c_hst_test, "--out", out)
    assert result.exit_code == 0, result.output
    assert "cdm vs no_sub AUC by substructure fraction: 0.2–0.5 %" in result.output
    record = json.loads((out / "results.json").read_text())
    block = record["sensitivity"]
    data = StoredDataset(c_hst_test, "classify", normalized=False)
    assert block["n_known"] == 6 and block["n_unknown"] == 0
    assert block["mass_fraction_range"] == [0.002, 0.02]
    assert block["data_manifest_sha256"] == sha256_file(c_hst_test / "manifest.json")
    # the same numbers as the module on the model's own outputs and the stored fractions
    model = load_checkpoint(folder)
    images = torch.stack([torch.from_numpy(data.image(i)) for i in range(len(data))])
    with torch.no_grad():
        outputs = model(model.preprocess(images))
    expected = sensitivity(data.targets, outputs, data.meta["mass_fraction"])
    assert [b["n"] for b in block["bins"]] == [b["n"] for b in expected["bins"]]
    assert sum(b["n"] for b in block["bins"]) + block["n_outside_bins"] == 6
    for got, want in zip(block["bins"], expected["bins"]):
        for pair in ("cdm_vs_no_sub", "axion_vs_no_sub"):
            assert got[pair]["auc"] == (None if want[pair]["auc"] is None else pytest.approx(want[pair]["auc"]))
        assert got["accuracy"] == (None if want["accuracy"] is None else pytest.approx(want["accuracy"]))

    # other bins on request
    out2 = tmp_path / "eval2"
    assert cli("evaluate", folder, "--data", c_hst_test, "--out", out2, "--fraction-bins", "0.1,1,10").exit_code == 0
    assert [b["fraction_percent"] for b in json.loads((out2 / "results.json").read_text())["sensitivity"]["bins"]] \
        == [[0.1, 1.0], [1.0, 10.0]]


def test_data_without_fractions_give_no_block(probe, tmp_path, c_hst_test):
    """A stored A set (fractions NaN) and a C set written before the field existed: no block."""
    import shutil

    from lenszoo.data import simulate_dataset
    from lenszoo.data.storage import META_DTYPE

    a_test = tmp_path / "A-test"
    simulate_dataset("A", "test", 1, a_test, seed=1, progress=False)
    older = tmp_path / "C-old"
    shutil.copytree(c_hst_test, older)
    old_dtype = np.dtype([(name, META_DTYPE[name]) for name in META_DTYPE.names
                          if name not in ("mass_fraction", "substructure_mass_msun")])
    for meta_path in older.glob("meta-*.npy"):
        meta = np.load(meta_path)
        old = np.zeros(meta.shape, dtype=old_dtype)
        for name in old_dtype.names:
            old[name] = meta[name]
        np.save(meta_path, old)
    for data, dataset in ((a_test, "A"), (older, "C-hst")):
        folder = probe_checkpoint(tmp_path / f"ckpt-{dataset}", dataset)
        out = tmp_path / f"eval-{dataset}"
        result = cli("evaluate", folder, "--data", data, "--out", out, "--no-verify")
        assert result.exit_code == 0, result.output
        record = json.loads((out / "results.json").read_text())
        assert "sensitivity" not in record and "substructure fraction" not in result.output


@pytest.mark.parametrize("bins", ["", "1", "2,1", "0,1,2", "0.5,0.5,1", "1,200", "a,b", "1,nan", "-1,2"])
def test_bad_fraction_bins_are_one_line_errors_before_any_work(probe, tmp_path, bins):
    folder = probe_checkpoint(tmp_path / "ckpt", "C-hst")
    out = tmp_path / "eval"
    result = cli("evaluate", folder, "--data", tmp_path / "no-such-data", "--out", out, "--fraction-bins", bins)
    one_line_error(result, "--fraction-bins must be at least two increasing percentages")
    assert not out.exists()


# -- the page section ------------------------------------------------------------------------------
def record(arch, sha, block, *, n, dataset="C-hst", split="holdout", trained_on="C-hst", data_id=None):
    block = dict(block, data_manifest_sha256=data_id or f"{sha}-{n}")
    return {"format": "lenszoo-evaluation", "format_version": 1, "arch": arch, "tag": None, "task": "classify",
            "dataset": dataset, "split": split, "n": n, "trained_on": trained_on,
            "model": {"weights_sha256": sha}, "metrics": {"accuracy": 0.5}, "rotations": None,
            "sensitivity": block}


@pytest.fixture
def page_records(tmp_path):
    """c8 perfect from 1 %, resnet perfect from 2 % (standard 0.2-2 % and strong 2-5 % sets each);
    a duplicate evaluation, older weights, a transfer and a val evaluation that must not count."""
    from lenszoo.report import load_results

    standard = dict(span=(0.002, 0.02), n=1200)
    strong = dict(span=(0.02, 0.05), n=600)
    records = [
        record("c8_steerable", "c8", sensitivity(*synthetic(seed=1, perfect_from=0.01, **standard)), n=1200,
               data_id="standard"),
        record("c8_steerable", "c8", sensitivity(*synthetic(seed=2, perfect_from=0.01, **strong)), n=600,
               data_id="strong"),
        record("c8_steerable", "c8", sensitivity(*synthetic(seed=1, perfect_from=0.01, **standard)), n=1200,
               data_id="standard"),  # the same set again (a --tta evaluation): counted once
        record("c8_steerable", "c8-old", sensitivity(*synthetic(seed=5, perfect_from=0, n=300)), n=300),
        record("resnet50", "rn", sensitivity(*synthetic(seed=3, perfect_from=0.02, **standard)), n=1200,
               data_id="standard"),
        record("resnet50", "rn", sensitivity(*synthetic(seed=4, perfect_from=0.02, **strong)), n=600,
               data_id="strong"),
        record("resnet50", "rn-B", sensitivity(*synthetic(seed=6, n=300)), n=5000, trained_on="B"),
        record("resnet50", "rn", sensitivity(*synthetic(seed=7, perfect_from=0, n=300)), n=300, split="val"),
        {**record("hnet", "h", {}, n=10), "sensitivity": None},  # e.g. an A-style evaluation: nothing
    ]
    for i, r in enumerate(records):
        folder = tmp_path / "records" / f"r{i}"
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps(r))
    return load_results([tmp_path / "records"])


def table(text, title):
    section = text.split(title, 1)[1].split("###", 1)[0]
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in section.splitlines()
            if line.startswith("|")]


def test_section_draws_curves_and_states_detection_and_ranking(tmp_path, page_records):
    figure = tmp_path / "figures" / "sensitivity.png"
    text = sensitivity_section(page_records, figure, link="figures/sensitivity.png")
    assert figure.read_bytes()[:4] == b"\x89PNG"
    assert "](figures/sensitivity.png)" in text
    cdm = table(text, "### cdm vs no_sub: AUC")
    assert cdm[0] == ["dataset", "architecture", "0.2–0.5 %", "0.5–1 %", "1–2 %", "2–5 %"]
    rows = {row[1]: row for row in cdm[2:]}
    assert set(rows) == {"`c8_steerable`", "`resnet50`"}  # hnet has no block
    assert rows["`c8_steerable`"][4].startswith("1.000 ± 0.000 (n ")
    assert rows["`c8_steerable`"][5].startswith("1.000 ± 0.000 (n ")
    assert rows["`resnet50`"][4].split(" ± ")[0] != "1.000"
    # the duplicate evaluation is counted once, the older weights, the transfer and val are not shown
    for arch, standard, strong in (("c8_steerable", 0, 1), ("resnet50", 4, 5)):
        merged = {b: int(cell.split("(n ")[1].rstrip(")")) for b, cell in zip(cdm[0][2:], rows[f"`{arch}`"][2:])}
        for k, name in enumerate(cdm[0][2:]):
            expected = sum(b[k]["cdm_vs_no_sub"]["n_pos"] + b[k]["cdm_vs_no_sub"]["n_neg"]
                           for b in (page_records[standard]["sensitivity"]["bins"],
                                     page_records[strong]["sensitivity"]["bins"])
                           if b[k]["cdm_vs_no_sub"]["auc"] is not None)
            assert merged[name] == expected
    assert "- `c8_steerable` on C-hst detects cdm from f = 1 % up" in text
    assert "- `resnet50` on C-hst detects cdm from f = 2 % up" in text
    ranking = table(text, "### Ranking on C-hst")
    assert ranking[0][:4] == ["architecture", "rank at 2–5 %", "AUC at 2–5 %", "beats (> 2 SE)"]
    by_arch = {row[0]: row for row in ranking[2:]}
    # both perfect at 2-5 %: a tie; pooled over every bin, c8 (perfect from 1 %) beats resnet50
    assert by_arch["`c8_steerable`"][1] == by_arch["`resnet50`"][1] == "1"
    assert by_arch["`c8_steerable`"][3] == by_arch["`resnet50`"][3] == "none"
    assert by_arch["`c8_steerable`"][4] == "1" and by_arch["`c8_steerable`"][6] == "`resnet50`"
    assert by_arch["`resnet50`"][4] == "2" and by_arch["`resnet50`"][6] == "none"


def test_section_prefers_released_weights_and_is_none_without_blocks(tmp_path, page_records):
    text = sensitivity_section(page_records, tmp_path / "s.png", released=frozenset({"c8-old"}))
    rows = {row[1]: row for row in table(text, "### cdm vs no_sub: AUC")[2:]}
    assert rows["`c8_steerable`"][5].startswith("1.000")  # c8-old is perfect everywhere
    assert rows["`c8_steerable`"][2].startswith("1.000")
    without = [r for r in page_records if not r.get("sensitivity")]
    assert sensitivity_section(without, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_a_damaged_block_is_named(tmp_path, page_records):
    damaged = [dict(page_records[0], sensitivity={"bins": [{"fraction_percent": [2, 1]}]})]
    with pytest.raises(LenszooError, match="damaged 'sensitivity' block"):
        sensitivity_section(damaged, tmp_path / "s.png")
