"""Every core CLI command through click's runner; user errors are one line, no traceback."""

import subprocess
import sys
from pathlib import Path


import pytest
from click.testing import CliRunner

import lenszoo
from lenszoo.cli import main
from lenszoo.registry import registry


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, list(args), catch_exceptions=False)

    return invoke


def assert_one_line_error(result, *fragments):
    assert result.exit_code != 0
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


def test_version(run):
    result = run("--version")
    assert result.exit_code == 0 and lenszoo.__version__ in result.output


def test_list_shows_name_tasks_plugin_and_parameters(run):
    result = run("list", "resnet*")
    assert result.exit_code == 0
    row = next(line for line in result.output.splitlines() if line.startswith("resnet50"))
    assert "classify,regress" in row and "23,507,907" in row


def test_list_filters_by_task_and_reports_no_match(run):
    registry.register_plugin(_ClassifyOnly(), name="probe")
    try:
        assert "probe_net" in run("list", "--task", "classify", "--no-params").output
        assert "probe_net" not in run("list", "--task", "regress", "--no-params").output
        assert_one_line_error(run("list", "nothing*"), "no architecture matches 'nothing*'")
    finally:
        registry.unregister_plugin("probe")


def test_plugins_lists_builtins_with_hooks(run):
    result = run("plugins")
    assert result.exit_code == 0
    row = next(line for line in result.output.splitlines() if line.startswith("resnet50"))
    assert "built-in" in row and "lenszoo" in row and "architectures" in row and "loaded" in row


def test_plugins_shows_load_errors(run, fake_distribution, use_plugins):
    fake_distribution("lenszoo-broken", {"broken_import": "broken_import_mod"},
                      {"broken_import_mod.py": "raise ImportError('missing dependency xyz')\n"})
    use_plugins("lenszoo-broken")
    with pytest.warns(UserWarning):
        result = run("plugins")
    assert result.exit_code == 0
    assert "failed" in result.output and "missing dependency xyz" in result.output


def test_info_describes_an_architecture(run):
    result = run("info", "resnet50")
    assert result.exit_code == 0
    assert "He et al. 2016" in result.output and "regress" in result.output and "1x64x64" in result.output


def test_unknown_architecture_is_one_line_with_a_suggestion(run):
    assert_one_line_error(run("info", "resnet5"), "unknown architecture 'resnet5'", "did you mean 'resnet50'")


def test_unknown_command_is_a_usage_error(run):
    result = CliRunner().invoke(main, ["frobnicate"])
    assert result.exit_code == 2 and "No such command" in result.output


def test_demo_scores_released_models_on_fresh_lenses_and_draws_them(run, tmp_path, monkeypatch):
    import json
    import shutil

    repo = Path(__file__).resolve().parents[1]
    manifest = json.loads((repo / "weights_manifest.json").read_text())
    keep = [e for e in manifest["weights"] if e["arch"] == "c8_steerable" and e["dataset"] == "B"][:2]
    for entry in keep:
        shutil.copytree(repo / entry["folder"], tmp_path / entry["folder"])
    (tmp_path / "weights_manifest.json").write_text(json.dumps({**manifest, "weights": keep}))
    monkeypatch.setenv("LENSZOO_MANIFEST", str(tmp_path / "weights_manifest.json"))
    figure = tmp_path / "out" / "demo.png"
    result = run("demo", "--n-per-class", "3", "--figure", figure)
    assert result.exit_code == 0, result.output
    for entry in keep:
        assert f"c8_steerable  {entry['task']}" in result.output
    assert "of 9" in result.output  # 3 fresh lenses per class
    from lenszoo.demo import is_demo_figure

    assert is_demo_figure(figure)
    assert run("demo", "--n-per-class", "1", "--figure", figure).exit_code == 0  # its own figure: replaced
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"\x89PNG\r\n\x1a\nmine")
    assert run("demo", "--figure", mine).exit_code != 0 and mine.read_bytes().endswith(b"mine")


def test_console_script_prints_user_errors_without_traceback():
    out = subprocess.run([sys.executable, "-m", "lenszoo", "info", "nosuchnet"], capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("Error: unknown architecture 'nosuchnet'")
    assert all(line.startswith(("Error: ", "Warning: ")) for line in out.stderr.strip().splitlines())
    assert "Traceback" not in out.stderr


class _ClassifyOnly:
    @lenszoo.hookimpl
    def register_architectures(self, register):
        import torch.nn as nn

        register("probe_net", lambda task: nn.Sequential(nn.Flatten(), nn.Linear(64 * 64, 3)), tasks=("classify",))


def test_the_engine_help_points_to_the_measurements_instead_of_a_speed_factor(run):
    """Issue 27, item 15: the help said '~1.5x faster' where docs/predict.md measured 1.33x bare, 1.08x end to end."""
    import re

    result = run("predict", "--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    engine = text[text.index("--engine"):text.index("--quiet")]
    assert "docs/predict.md" in engine
    assert not re.search(r"\d(\.\d+)?\s*[x×]", engine), engine  # no factor that can go stale
