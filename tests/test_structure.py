"""One way to do each thing: the shared pieces behave the same wherever they are used, and what a
new user tripped over is fixed."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import lenszoo
from lenszoo.cli import main
from lenszoo.errors import LenszooError
from lenszoo.registry import registry

from .probes import ProbePlugin, registered

REPO = Path(__file__).resolve().parents[1]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def probe():
    with registered(ProbePlugin("probe", legacy="legacy_probe"), "probe-plugin"):
        yield


@pytest.fixture
def run_dir(probe, tmp_path):
    run = tmp_path / "run"
    result = cli("train", "--arch", "probe", "--stream", "--dataset", "A", "--epochs", 1, "--epoch-size", 6,
                 "--batch-size", 6, "--val-size", 6, "--quiet", "--out", run)
    assert result.exit_code == 0, result.output
    return run


# -- registration ----------------------------------------------------------------------------------
def test_registration_keeps_metadata_apart_from_model_arguments(probe):
    for name in ("probe", "legacy_probe"):
        spec = lenszoo.get_architecture(name)
        assert spec.default_kwargs == {"width": 4} and spec.input_size == (1, 64, 64)
        model = lenszoo.create_model(name, width=6)
        assert model.lenszoo_config["model_args"] == {"width": 6}
    with pytest.raises(LenszooError, match="input_size of 'probe' is fixed by its registration"):
        lenszoo.create_model("probe", input_size=48)


def test_declared_parameter_counts_are_the_built_models(use_plugins):
    use_plugins("lenszoo-d8")
    for name in lenszoo.list_models():
        spec = lenszoo.get_architecture(name)
        assert set(spec.parameters) == set(spec.tasks), name
        for task in spec.tasks:
            built = sum(p.numel() for p in spec.build(task).parameters())
            assert spec.parameters[task] == built, (name, task, built)


def test_models_from_create_model_carry_their_preprocessing():
    model = lenszoo.create_model("hnet").eval()
    images = np.random.default_rng(0).uniform(0, 500, (2, 1, 64, 64))
    with torch.no_grad():
        out = model(model.preprocess(images))  # the README's pattern, for a fresh model too
    assert out.shape == (2, 3)
    assert model.preprocess(images).abs().amax() == 1  # per-image max normalisation, as in training


def test_listing_and_describing_build_nothing_and_import_no_torch():
    code = ("import sys; from lenszoo.cli import main\n"
            "for args in (['list'], ['info', 'c8_steerable'], ['info', 'A']):\n"
            "    main(args, standalone_mode=False)\n"
            "print('heavy:', sorted(m for m in ('torch', 'escnn', 'timm', 'lenstronomy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**__import__("os").environ, "LENSZOO_PLUGINS": ""})
    assert out.returncode == 0, out.stderr
    assert "heavy: []" in out.stdout
    assert "104,431" in out.stdout and "Euclid VIS" in out.stdout


def test_info_describes_datasets_too():
    result = cli("info", "B")
    assert result.exit_code == 0, result.output
    assert "(dataset)" in result.output and "HST" in result.output and "no_sub, cdm, axion" in result.output
    result = cli("info", "Bee")
    assert result.exit_code != 0 and "unknown architecture 'Bee'" in result.output


# -- data -------------------------------------------------------------------------------------------
def test_the_stream_and_the_trainer_split_ranks_and_workers_one_way():
    from lenszoo.data import StreamingDataset
    from lenszoo.train import BatchPlan

    for world, workers in ((1, 1), (2, 1), (2, 3), (4, 2)):
        for rank in range(world):
            stream = StreamingDataset("A", "train", epoch_size=24, rank=rank, world_size=world)
            plan = BatchPlan(None, 24, seed=0, shuffle=False, rank=rank, world_size=world, epoch_size=24)
            for epoch in (0, 3):
                mine = sorted(p for w in range(workers) for p in stream.positions(epoch, w, workers))
                assert mine == sorted(plan.epoch_items(epoch).tolist())


def test_a_generator_without_the_interface_is_named():
    from lenszoo.data import simulate_dataset

    class NotAGenerator:
        name = "broken"

    with pytest.raises(LenszooError, match="lacks class_names, config, simulate"):
        simulate_dataset(NotAGenerator(), "test", 1, "/nonexistent/never-written")


class VariantPlugin:
    @lenszoo.hookimpl
    def register_datasets(self, register):
        register("A-heavy", lenszoo.data.variant("A", "A-heavy", cdm={"n_subhalos": 50}),
                 description="A with 50 subhalos")


def test_a_plugin_derives_a_named_variant_of_a_dataset_with_the_public_api():
    registry.register_plugin(VariantPlugin(), name="variant-plugin")
    try:
        heavy = lenszoo.get_dataset("A-heavy")
        assert heavy.config["cdm"]["n_subhalos"] == 50 and lenszoo.get_dataset("A").config["cdm"]["n_subhalos"] == 25
        image, meta = heavy.simulate("test", 1)  # index 1: a cdm lens
        assert meta["class_name"] == "cdm" and meta["n_subhalos"] == 50 and image.shape == (64, 64)
        assert cli("info", "A-heavy").exit_code == 0
    finally:
        registry.unregister_plugin("variant-plugin")
    with pytest.raises(LenszooError, match="unknown base dataset"):
        lenszoo.data.variant("Z", "Z-heavy")
    with pytest.raises(LenszooError, match="invalid dataset name"):
        lenszoo.data.variant("A", "A/heavy")


def test_preview_captions_sit_under_their_own_axion_panels():
    from lenszoo.data.preview import preview_figure

    figure = preview_figure(lenszoo.get_dataset("B"), "test", per_class=2)
    axes = np.array(figure.axes[:6]).reshape(3, 2)
    assert all(ax.get_title() == "" for ax in figure.axes)
    assert all(ax.get_xlabel().startswith("log10 m_a = ") for ax in axes[2])  # the axion row
    assert all(ax.get_xlabel() == "" for ax in axes[:2].ravel())


def test_preview_never_replaces_a_png_it_did_not_write(tmp_path):
    mine = tmp_path / "figure.png"
    mine.write_bytes(b"\x89PNG\r\n\x1a\nsomeone's figure")
    result = cli("simulate", "-d", "A", "-s", "test", "-n", 1, "-o", tmp_path / "d", "--preview", mine)
    assert result.exit_code != 0 and "never replaces" in result.output
    assert mine.read_bytes().endswith(b"someone's figure")
    ours = tmp_path / "grid.png"
    for _ in range(2):  # its own preview is regenerated
        assert cli("simulate", "-d", "A", "-s", "test", "-n", 1, "-o", tmp_path / "d", "--preview", ours).exit_code == 0


# -- release, report --------------------------------------------------------------------------------
def test_release_goes_where_to_says_and_never_into_an_installed_package(run_dir, tmp_path, monkeypatch):
    import lenszoo.pretrained.release as release

    monkeypatch.delenv("LENSZOO_MANIFEST", raising=False)
    assert release.release_manifest() == REPO / "weights_manifest.json"  # a source checkout: its own
    monkeypatch.setattr(release, "source_checkout", lambda: None)  # as from an installed wheel
    result = cli("release", run_dir)
    assert result.exit_code != 0 and "--to DIR" in result.output
    target = tmp_path / "my-zoo"
    result = cli("release", run_dir, "--to", target)
    assert result.exit_code == 0, result.output
    manifest = json.loads((target / "weights_manifest.json").read_text())
    assert manifest["weights"][0]["folder"] == "weights/probe-classify-A"
    assert (target / "weights" / "probe-classify-A" / "model.safetensors").is_file()


def test_an_evaluated_release_carries_its_runs_learning_curve(run_dir, tmp_path):
    """The run folder can be gone: the released copy's record still has the curve the page plots."""
    target = tmp_path / "my-zoo"
    assert cli("release", run_dir, "--to", target).exit_code == 0
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    out = tmp_path / "eval"
    result = cli("evaluate", target / "weights" / "probe-classify-A", "--n-per-class", 2, "--out", out)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "results.json").read_text())
    assert record["model"]["history"] == history and history[-1]["images_seen"] == 6


def test_report_counts_distinct_weights_not_evaluations(run_dir, tmp_path):
    for seed in (0, 1):  # the same weights evaluated twice
        assert cli("evaluate", run_dir, "--n-per-class", 2, "--seed", seed, "--out", tmp_path / f"e{seed}").exit_code == 0
    result = cli("report", tmp_path / "e0", tmp_path / "e1")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("| probe"))
    assert row.rstrip(" |").endswith("| 1") and "±" not in row


# -- docs --------------------------------------------------------------------------------------------
def test_docs_stand_alone():
    """The documentation cites nothing outside the repository."""
    for path in [REPO / "README.md", *(REPO / "docs").glob("*.md")]:
        text = path.read_text()
        assert "shared/docs" not in text and "../shared" not in text, path


def test_architecture_doc_lists_every_module():
    text = (REPO / "docs" / "architecture.md").read_text()
    for module in sorted((REPO / "lenszoo").rglob("*.py")):
        relative = module.relative_to(REPO / "lenszoo")
        if module.name == "__init__.py" and relative.parent != Path("."):
            continue
        name = module.name if relative.parent == Path(".") else f"{relative.parent.name}/" if \
            relative.parent.name in ("commands", "data") else module.name
        assert re.search(re.escape(name), text), f"docs/architecture.md does not mention {relative}"


def test_the_results_page_is_generated_from_evaluations_and_regenerates(run_dir, tmp_path):
    for args in (["--n-per-class", 3], ["--n-per-class", 2, "--rotations"]):
        assert cli("evaluate", run_dir, *args).exit_code == 0
    page, notes = tmp_path / "docs" / "results.md", tmp_path / "notes.md"
    page.parent.mkdir()
    notes.write_text("## classification\n\nWhat the numbers mean, in words.")
    args = ["report", run_dir / "eval", "--page", page, "--paper", REPO / "docs" / "seed_paper.json", "--notes", notes]
    for _ in range(2):  # its own page and figures: regenerated in place
        result = cli(*args)
        assert result.exit_code == 0, result.output
    text = page.read_text()
    assert text.startswith("<!-- written by `lenszoo report`") and "What the numbers mean, in words." in text
    for section in ("Table 1", "Table 2", "pair by pair", "rotation robustness", "learning curves"):
        assert section in text, section
    row = next(line for line in text.splitlines() if line.startswith("| A | `probe`"))
    assert "| 6 (1 × 6) |" in row and row.endswith("| 9 |")  # the probe run planned 6 images; 9 test images
    assert text.index("| A | `probe`") < text.index("What the numbers mean") < text.index("## Table 2")
    figures = tmp_path / "docs" / "results-figures"
    assert (figures / "learning_curves.png").is_file() and (figures / "probe-classify-A-roc_curves.png").is_file()
    assert "](results-figures/learning_curves.png)" in text


# -- layering ----------------------------------------------------------------------------------------
def lenszoo_import_graph() -> dict[str, set[str]]:
    """module -> the lenszoo modules its source imports, at module level or inside a function (both
    count: a function-level import is still a dependency, only a later one). ``from PKG import NAME``
    names PKG.NAME where that is a module, else PKG. Imports of the top package ``lenszoo`` itself
    are left out: Python runs ``lenszoo/__init__.py`` before any of its modules, so reading a name
    from it (``__version__``) imports nothing new."""
    import ast

    root = REPO / "lenszoo"
    modules = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:  # `import lenszoo.x.y` names lenszoo.x.y
                    target = target.rpartition(".")[0]
                if target and target != "lenszoo" and target != name:
                    found.add(target)
        graph[name] = found
    return graph


def test_lenszoo_modules_import_each_other_without_a_cycle():
    graph = lenszoo_import_graph()
    assert "lenszoo.checkpoint" in graph["lenszoo.rundir"]  # the graph sees imports
    state, cycles = {}, []

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles among lenszoo's modules:\n" + "\n".join(cycles)


def test_loading_released_weights_imports_neither_the_cli_nor_the_trainer():
    """Registry tables are built per hook kind: resolving an architecture runs no command hook."""
    code = ("import lenszoo, sys; lenszoo.load('c8_steerable', task='classify', dataset='B'); "
            "print(sorted(m for m in sys.modules if m.startswith(('click', 'lenszoo.train', 'escnn', 'timm'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_page_reads_roles_and_order_from_registrations(probe):
    from lenszoo.page import select

    assert select.ORDER == ("resnet50", "c8_steerable", "hnet", "etn", "radial_profile")
    assert select.EQUIVARIANT == ("c8_steerable", "hnet", "etn")
    assert (select.BASELINE, select.CONTROL) == ("resnet50", "radial_profile")
    assert lenszoo.get_architecture("hnet").role == "equivariant"
    names = ["probe", "radial_profile", "legacy_probe", "resnet50", "c8_steerable"]
    assert sorted(names, key=select.arch_order) == ["resnet50", "c8_steerable", "radial_profile", "legacy_probe",
                                                    "probe"]  # a third-party arch without an order: after, by name
    with pytest.raises(TypeError, match="role of architecture"):
        from lenszoo.specs import _make_arch

        _make_arch("p", None, "x_net", lambda task: None, role="hero")
