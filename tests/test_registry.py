"""The plugin registry: built-ins via entry points, third-party discovery, failures, conflicts."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import lenszoo
from lenszoo.errors import LenszooError, PluginError, UnknownNameError
from lenszoo.registry import PluginWarning, registry

DOCS = Path(__file__).resolve().parent.parent / "docs"


def docs_plugin_example():
    """The files of the complete minimal plugin in docs/plugins.md, by name."""
    text = (DOCS / "plugins.md").read_text()
    blocks = re.findall(r"<!-- file: (\S+) -->\s*```\w*\n(.*?)```", text, flags=re.S)
    assert blocks, "docs/plugins.md lost its example files"
    return dict(blocks)


def test_builtin_resnet50_is_listed_and_builds_both_heads():
    import torch

    assert "resnet50" in lenszoo.list_models()
    arch = lenszoo.get_architecture("resnet50")
    assert arch.package == "lenszoo" and arch.tasks == ("classify", "regress")
    x = torch.randn(2, 1, 64, 64)
    for task, width in (("classify", 3), ("regress", 1)):
        model = lenszoo.create_model("resnet50", task=task).eval()
        assert model(x).shape == (2, width)
        assert model.lenszoo_config["arch"] == "resnet50" and model.lenszoo_config["task"] == task


def test_builtins_come_from_lenszoos_own_entry_points():
    import importlib.metadata

    eps = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="lenszoo") if ep.dist.name == "lenszoo"}
    assert eps["resnet50"] == "lenszoo.archs.resnet50"
    info = {p.name: p for p in registry.plugins()}
    assert info["resnet50"].builtin and info["resnet50"].status == "loaded"
    assert "register_architectures" in info["resnet50"].hooks


def test_list_models_filters_by_pattern_and_task():
    assert lenszoo.list_models("res*") == ["resnet50"]
    assert lenszoo.list_models(["nothing*", "resnet?0"]) == ["resnet50"]
    assert lenszoo.list_models("zzz*") == []
    assert "resnet50" in lenszoo.list_models(task="regress")
    with pytest.raises(UnknownNameError, match="unknown task 'classfy'; did you mean 'classify'"):
        lenszoo.list_models(task="classfy")


class ClassifyOnly:
    @lenszoo.hookimpl
    def register_architectures(self, register):
        import torch.nn as nn

        register("probe_net", lambda task, width=4: nn.Sequential(nn.Flatten(), nn.Linear(64 * 64, 3)),
                 tasks=("classify",), description="in-process test architecture", width=4)


def test_in_process_plugin_appears_and_disappears():
    registry.register_plugin(ClassifyOnly(), name="probe")
    try:
        assert "probe_net" in lenszoo.list_models()
        assert lenszoo.list_models(task="regress").count("probe_net") == 0
        assert lenszoo.get_architecture("probe_net").plugin == "probe"
        assert lenszoo.create_model("probe_net").lenszoo_config["model_args"] == {"width": 4}
        with pytest.raises(LenszooError, match="has no 'regress' head; it supports: classify"):
            lenszoo.create_model("probe_net", task="regress")
    finally:
        registry.unregister_plugin("probe")
    assert "probe_net" not in lenszoo.list_models()


def test_docs_example_plugin_is_discovered_through_a_real_distribution(fake_distribution, use_plugins):
    import importlib.metadata
    import torch

    files = docs_plugin_example()
    assert 'tiny_cnn = "lenszoo_tinycnn"' in files["pyproject.toml"]
    fake_distribution("lenszoo-tinycnn", {"tiny_cnn": "lenszoo_tinycnn"},
                      {"lenszoo_tinycnn.py": files["lenszoo_tinycnn.py"]})
    # discovery is importlib.metadata's own, not a mock
    assert any(ep.name == "tiny_cnn" for ep in importlib.metadata.entry_points(group="lenszoo"))
    use_plugins("lenszoo-tinycnn")
    assert "tiny_cnn" in lenszoo.list_models()
    plugin = {p.name: p for p in registry.plugins()}["tiny_cnn"]
    assert (plugin.builtin, plugin.package, plugin.version, plugin.status) == (False, "lenszoo-tinycnn", "0.1", "loaded")
    model = lenszoo.create_model("tiny_cnn", task="regress")
    assert model(torch.randn(3, 1, 64, 64)).shape == (3, 1)


def test_third_party_plugins_are_pinned_by_LENSZOO_PLUGINS(fake_distribution, use_plugins, monkeypatch):
    files = docs_plugin_example()
    fake_distribution("lenszoo-tinycnn", {"tiny_cnn": "lenszoo_tinycnn"},
                      {"lenszoo_tinycnn.py": files["lenszoo_tinycnn.py"]})
    use_plugins()  # set and empty: built-ins only
    assert "tiny_cnn" not in lenszoo.list_models() and "resnet50" in lenszoo.list_models()
    assert {p.name: p.status for p in registry.plugins()}["tiny_cnn"] == "skipped"
    use_plugins("tiny_cnn")  # an entry-point name works as well as a package name
    assert "tiny_cnn" in lenszoo.list_models()
    monkeypatch.delenv("LENSZOO_PLUGINS")  # unset: everything installed loads
    registry.reset()
    assert "tiny_cnn" in lenszoo.list_models()


BROKEN_ON_IMPORT = "raise ImportError('needs a package that is not installed')\n"
BROKEN_IN_HOOK = """
import lenszoo

@lenszoo.hookimpl
def register_architectures(register):
    register("half_registered", lambda task: None)
    raise RuntimeError("bad configuration")
"""


def test_broken_plugins_are_reported_and_others_keep_working(fake_distribution, use_plugins):
    files = docs_plugin_example()
    fake_distribution("lenszoo-tinycnn", {"tiny_cnn": "lenszoo_tinycnn"},
                      {"lenszoo_tinycnn.py": files["lenszoo_tinycnn.py"]})
    fake_distribution("lenszoo-broken", {"broken_import": "broken_import_mod", "broken_hook": "broken_hook_mod"},
                      {"broken_import_mod.py": BROKEN_ON_IMPORT, "broken_hook_mod.py": BROKEN_IN_HOOK})
    use_plugins("lenszoo-tinycnn", "lenszoo-broken")
    with pytest.warns(PluginWarning) as caught:
        names = lenszoo.list_models()
    assert "tiny_cnn" in names and "resnet50" in names
    assert "half_registered" not in names  # a failing hook registers nothing
    messages = " | ".join(str(w.message) for w in caught)
    assert "needs a package that is not installed" in messages and "bad configuration" in messages
    status = {p.name: p for p in registry.plugins()}
    assert status["broken_import"].status == "failed"
    assert "ImportError" in status["broken_import"].errors[0]
    assert status["broken_hook"].status == "failed"
    assert "register_architectures failed: RuntimeError: bad configuration" in status["broken_hook"].errors[0]


def test_plugins_load_once():
    registry.register_plugin(ClassifyOnly(), name="probe")
    try:
        pm = registry.pm
        lenszoo.list_models()
        lenszoo.list_models()
        assert registry.pm is pm
    finally:
        registry.unregister_plugin("probe")


class SecondResnet:
    @lenszoo.hookimpl
    def register_architectures(self, register):
        register("resnet50", lambda task: None)


class SecondResnetAndMore:
    """Claims a taken name and also brings a name of its own: all of it is quarantined."""

    @lenszoo.hookimpl
    def register_architectures(self, register):
        import torch.nn as nn

        register("resnet50", lambda task: nn.Linear(1, 1))
        register("copycat_net", lambda task: nn.Sequential(nn.Flatten(), nn.Linear(64 * 64, 3)))

    @lenszoo.hookimpl
    def register_datasets(self, register):
        register("copycat_data", lambda **overrides: None)


def test_a_plugin_claiming_a_taken_name_is_quarantined_and_the_rest_keep_working():
    from click.testing import CliRunner

    from lenszoo.cli import main

    registry.register_plugin(SecondResnetAndMore(), name="copycat")
    try:
        with pytest.warns(PluginWarning, match="architecture 'resnet50' is already registered by plugin 'resnet50'"):
            names = lenszoo.list_models()
        assert "resnet50" in names and "copycat_net" not in names  # nothing of the later plugin
        assert "copycat_data" not in lenszoo.list_datasets()
        assert lenszoo.get_architecture("resnet50").package == "lenszoo"  # the built-in keeps its name
        info = {p.name: p for p in registry.plugins()}
        assert info["copycat"].status == "failed" and "disabled" in info["copycat"].errors[0]
        result = CliRunner().invoke(main, ["plugins"])
        assert result.exit_code == 0 and "copycat" in result.output and "failed" in result.output
    finally:
        registry.unregister_plugin("copycat")
    assert "resnet50" in lenszoo.list_models()


def test_registering_the_same_plugin_name_twice_is_refused():
    registry.register_plugin(ClassifyOnly(), name="probe")
    try:
        with pytest.raises(PluginError, match="already registered"):
            registry.register_plugin(ClassifyOnly(), name="probe")
    finally:
        registry.unregister_plugin("probe")


def test_unknown_names_suggest_close_matches():
    with pytest.raises(UnknownNameError, match=r"unknown architecture 'resnet5'; did you mean 'resnet50'"):
        lenszoo.create_model("resnet5")
    with pytest.raises(UnknownNameError, match="unknown architecture 'qwerty'; known: .*resnet50"):
        lenszoo.create_model("qwerty")
    with pytest.raises(UnknownNameError, match="unknown task 'regres'; did you mean 'regress'"):
        lenszoo.create_model("resnet50", task="regres")


def test_load_without_released_weights_says_which_are_missing(tmp_path, monkeypatch):
    manifest = tmp_path / "weights_manifest.json"
    manifest.write_text('{"schema_version": 1, "weights": []}')
    monkeypatch.setenv("LENSZOO_MANIFEST", str(manifest))
    with pytest.raises(LenszooError, match="no released weights for arch='resnet50' task='regress' dataset='B'"):
        lenszoo.load("resnet50", task="regress", dataset="B")
    with pytest.raises(UnknownNameError, match="did you mean 'resnet50'"):
        lenszoo.load("resnet5", task="classify", dataset="A")


def test_importing_lenszoo_and_loading_the_registry_import_no_heavy_package():
    code = (
        "import sys, lenszoo; lenszoo.list_models();"
        "heavy = [m for m in ('timm', 'escnn', 'lenstronomy', 'huggingface_hub') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    code = "import sys, lenszoo; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


class HelloCommand:
    @lenszoo.hookimpl
    def register_commands(self, register):
        import click

        @click.command("hello-probe")
        @click.argument("name")
        def hello(name):
            """Greet NAME (test command)."""
            click.echo(f"hello {name}")

        register(hello)


def test_a_plugin_adds_a_cli_command_and_takes_it_away_again():
    from click.testing import CliRunner

    from lenszoo.cli import main

    registry.register_plugin(HelloCommand(), name="hello")
    try:
        result = CliRunner().invoke(main, ["hello-probe", "lens"])
        assert result.exit_code == 0 and result.output == "hello lens\n"
        assert "hello-probe" in CliRunner().invoke(main, ["--help"]).output
        assert "register_commands" in {p.name: p for p in registry.plugins()}["hello"].hooks
    finally:
        registry.unregister_plugin("hello")
    gone = CliRunner().invoke(main, ["hello-probe", "lens"])
    assert gone.exit_code != 0 and "hello-probe" in gone.stderr
