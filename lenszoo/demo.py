"""``lenszoo demo`` (what ``make run`` runs): every released model, loaded offline, scored on
lenses simulated fresh for the occasion, beside the metrics it was released with; and a figure
of sample lenses with their true and predicted classes."""

from __future__ import annotations

import io
import math
import time
from pathlib import Path

from .errors import LenszooError

FIGURE_SOFTWARE = "lenszoo demo"  # the PNG's tEXt marker: a later demo may replace its own figure
SHORT = {"resnet50": "R50", "c8_steerable": "C8", "hnet": "HN", "etn": "ETN", "radial_profile": "RP"}


def is_demo_figure(path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return head.startswith(b"\x89PNG") and b"Software\x00" + FIGURE_SOFTWARE.encode() in head


def fresh_lenses(dataset: str, n_per_class: int, seed: int):
    """``n_per_class`` raw test-split images of each class, their labels and log10 m_a: the test stream
    with its own seed, so no released model has seen them."""
    import numpy as np
    import torch

    from .data import StreamingDataset

    stream = StreamingDataset(dataset, "test", "classify", epoch_size=3 * n_per_class, seed=seed, normalized=False)
    images, labels, masses = [], [], []
    for position in range(3 * n_per_class):
        index, _ = stream.stream_index(position)
        image, meta = stream.generator.simulate("test", index, seed)
        images.append(torch.from_numpy(np.asarray(image, dtype=np.float32))[None])
        labels.append(int(meta["label"]))
        masses.append(float(meta["log10_axion_mass"]))
    return torch.stack(images), torch.tensor(labels), torch.tensor(masses)


def score_released(n_per_class: int = 20, seed: int = 7) -> tuple[list[dict], dict, list]:
    """Each released model that is available here on fresh lenses: rows with the score now and the
    released one, the lenses, and the checkpoints skipped as unavailable (``WeightsUnavailable``:
    not bundled with this install and not published, say), so that one missing checkpoint never
    stops the rest."""
    import torch

    from .pretrained.load import load_model
    from .pretrained.manifest import released_weights
    from .pretrained.source import WeightsUnavailable, locate

    entries, skipped = [], []
    for entry in released_weights():
        try:
            locate(entry)
        except WeightsUnavailable as exc:
            skipped.append(exc)
        else:
            entries.append(entry)
    lenses = {dataset: fresh_lenses(dataset, n_per_class, seed) for dataset in sorted({e["dataset"] for e in entries})}
    rows = []
    for entry in entries:
        arch, task, dataset = entry["arch"], entry["task"], entry["dataset"]
        started = time.perf_counter()
        model = load_model(arch, task=task, dataset=dataset)
        images, labels, masses = lenses[dataset]
        if task == "regress":
            axion = torch.isfinite(masses)
            images, targets = images[axion], masses[axion]
        else:
            targets = labels
        with torch.no_grad():
            outputs = model(model.preprocess(images))
        released = entry["metrics"].get("test") or {}
        row = {"arch": arch, "task": task, "dataset": dataset, "n": len(targets), "outputs": outputs,
               "seconds": time.perf_counter() - started}
        if task == "classify":
            row["now"] = float((outputs.argmax(1) == targets).float().mean())
            row["released"] = released.get("accuracy")
        else:
            row["now"] = float((outputs.reshape(-1) - targets).abs().mean())
            row["released"] = released.get("mae")
        rows.append(row)
    return rows, lenses, skipped


def sample_figure(rows, lenses, path: Path, per_class: int = 2) -> Path:
    """Sample lenses of each dataset (``per_class`` per class), titled with the true class and
    each released classifier's prediction (and, for axions, log10 m_a: true and regressed)."""
    import torch

    from .files import atomic_write_bytes
    from .plotting import pyplot
    from .preprocess import normalize
    from .tasks import CLASS_NAMES

    plt = pyplot()

    datasets = sorted(lenses)
    columns = per_class * len(CLASS_NAMES)
    fig, axes = plt.subplots(len(datasets), columns, figsize=(2.0 * columns, 2.5 * len(datasets)), squeeze=False)
    for r, dataset in enumerate(datasets):
        images, labels, masses = lenses[dataset]
        picks = [i for label in range(len(CLASS_NAMES)) for i in (labels == label).nonzero().flatten()[:per_class].tolist()]
        for c, i in enumerate(picks):
            ax = axes[r][c]
            ax.imshow(normalize(images[i, 0]).numpy(), cmap="inferno", origin="lower", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            lines = [f"{dataset}: {CLASS_NAMES[int(labels[i])]}"]
            guesses = [f"{SHORT.get(row['arch'], row['arch'])} {CLASS_NAMES[int(row['outputs'][i].argmax())]}"
                       for row in rows if row["task"] == "classify" and row["dataset"] == dataset]
            lines += [", ".join(guesses[k:k + 2]) for k in range(0, len(guesses), 2)]
            if math.isfinite(float(masses[i])):
                axion_rank = int(torch.isfinite(masses[: i + 1]).sum()) - 1  # its row among the axion lenses
                regressed = [f"{SHORT.get(row['arch'], row['arch'])} {float(row['outputs'][axion_rank]):.1f}"
                             for row in rows if row["task"] == "regress" and row["dataset"] == dataset]
                lines.append(f"log10 m_a {float(masses[i]):.2f}" + (f"; {', '.join(regressed[:2])}" if regressed else ""))
            ax.set_title("\n".join(lines), fontsize=6)
    fig.suptitle("fresh test lenses: true class, then each released classifier's prediction", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": FIGURE_SOFTWARE})
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def check_figure_path(path) -> Path:
    from .files import claim_output

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise LenszooError(f"--figure writes a PNG; give a path ending in .png, not {path.name!r}")
    return claim_output(path, what="lenszoo demo figure", is_ours=is_demo_figure, option="--figure", kind="file")
