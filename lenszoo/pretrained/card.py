"""The model card a released or published checkpoint folder carries (its README.md): metadata
with every metric, the load line (pinned to the Hub commit where there is one), what to install,
the metrics, the recipe and the images the weights expect."""

from __future__ import annotations

from pathlib import Path

from ..checkpoint import CARD_NAME, read_config

TASK_TYPES = {"classify": ("image-classification", "Image classification"),
              "regress": ("image-regression", "Axion-mass regression")}


def _numeric_metrics(metrics: dict):
    """(split, name, value) for every number in a possibly split-nested metrics dict."""
    for key, value in (metrics or {}).items():
        if isinstance(value, dict):
            for name, inner in value.items():
                if isinstance(inner, (int, float)) and not isinstance(inner, bool) and name != "n":
                    yield key, name, float(inner)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield "val", key, float(value)


def _package_line(config: dict) -> str:
    """What to install to load a checkpoint: lenszoo, and the plugin package of its architecture."""
    import importlib.metadata

    packages = [("lenszoo", config.get("lenszoo_version"))]
    package = config.get("package")
    if package and package != "lenszoo":
        try:
            version = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            version = None
        packages.append((package, version))
    return " ".join(f"`{name}=={version}`" if version else f"`{name}`" for name, version in packages)


def card_metrics(config: dict, entry: dict | None = None) -> dict:
    """The metrics a released checkpoint's card shows: its config.json's (train, val, and the test /
    holdout evaluations found at release) and those its manifest ``entry`` recorded later
    (``release --metrics-from``), which leave config.json and its sha256 as they are."""
    return {**(config.get("metrics") or {}),
            **{split: values for split, values in ((entry or {}).get("metrics") or {}).items() if isinstance(values, dict)}}


def model_card_text(config: dict, repo_id: str | None = None, revision: str | None = None,
                    entry: dict | None = None) -> str:
    """The card: metadata (model-index with every metric), the pinned load line, what to install,
    the metrics (config.json's and those of its manifest ``entry``) and the recipe. ``revision``
    pins the load line to the commit holding the weights."""
    metrics = card_metrics(config, entry)
    from huggingface_hub import EvalResult, ModelCardData

    arch, task, dataset = config["arch"], config["task"], config.get("dataset") or "unknown"
    task_type, task_name = TASK_TYPES.get(task, (task, task))
    dataset_id = f"lenszoo-sim-{dataset}"
    results = [
        EvalResult(task_type=task_type, task_name=task_name, dataset_type=dataset_id,
                   dataset_name=f"lenszoo simulated dataset {dataset}", dataset_split=split,
                   metric_type=name, metric_name=f"{name} ({split})", metric_value=value)
        for split, name, value in _numeric_metrics(metrics)
    ]
    data = ModelCardData(
        library_name="lenszoo", license="mit", datasets=[dataset_id],
        tags=["lenszoo", "strong-lensing", "dark-matter", arch, task],
        model_name=f"{arch}-{task}-{dataset}" + (f".{config['tag']}" if config.get("tag") else ""),
        eval_results=results or None,
    )
    pin = f"@{revision}" if revision else ""
    tag = config.get("tag")
    named = f"{arch}.{tag}" if tag else arch
    load_line = (f'lenszoo.load("hf-hub:{repo_id}{pin}")' if repo_id
                 else f'lenszoo.load("{named}", task="{task}", dataset="{dataset}")')
    plugin = config.get("plugin")
    needs = _package_line(config) + (f" (the architecture comes from plugin `{plugin}`)"
                                     if config.get("package") not in (None, "lenszoo") else "")
    rows = "\n".join(f"| {split} | {name} | {value:.4g} |" for split, name, value in _numeric_metrics(metrics))
    recipe = "\n".join(f"- `{k}`: {v}" for k, v in sorted((config.get("recipe") or {}).items()))
    from ..contract import describe

    contract = "\n".join(f"- {what}: {value}" for what, value in describe(config.get("input_contract") or {})) \
        or "- not recorded (released before lenszoo stated input contracts)"
    target = "3 logits, classes " + ", ".join(config.get("class_names") or []) if task == "classify" \
        else "log10 of the axion mass in eV"
    return f"""---
{data.to_yaml()}
---

# {named} · {task} · dataset {dataset}

A lenszoo checkpoint: architecture `{arch}` trained to {task_name.lower()} on lenszoo's simulated strong-lensing
dataset **{dataset}** (64×64, one channel). Output: {target}.

```python
import lenszoo
model = {load_line}
x = model.preprocess(images)  # the normalisation this model was trained with
y = model(x)
```

Needs: pip install {needs}.

## Metrics

| split | metric | value |
|---|---|---|
{rows or "| - | - | - |"}

## Training recipe

{recipe or "- not recorded"}

Normalisation: `{config.get("normalization")}`. Images seen in training: {config.get("images_seen")}.
lenszoo version: {config.get("lenszoo_version")}.

## What images it expects

{contract}

`lenszoo predict` checks every image against this and writes a `flags` column for images that do
not look like the training images (sky level, noise, pedestal, centring, pixel scale).

## Limitations

Trained on simulations made with lenstronomy (lenszoo's dataset {dataset}); performance on real survey images
is not established.
"""


def write_model_card(folder, repo_id: str | None = None, revision: str | None = None,
                     config: dict | None = None) -> Path:
    folder = Path(folder)
    path = folder / CARD_NAME
    path.write_text(model_card_text(config or read_config(folder), repo_id, revision))
    return path
