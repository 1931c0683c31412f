"""Training parity of bfloat16 autocast against fp32, at equal images.

Trains one architecture twice with `lenszoo train`, the same recipe, seed, data and batches,
once in fp32 and once under bfloat16 autocast (weights, loss and optimizer state stay fp32 in
both), and compares them epoch by epoch: the mean training loss and the validation metric.
Throughput is measured in the same run, so the speed-up is a ratio on one machine.

The parity rule, fixed before any run: at every epoch the training loss differs by at most
``--loss-limit`` (relative), and after the last epoch the validation accuracy differs by at most
2 standard errors of the difference of two accuracies on the validation set (for regression: the
MAE by at most ``--mae-limit`` dex). bf16 rounding makes the two runs drift apart like two seeds
would, so a gap inside these limits is what the same recipe in fp32 would show anyway.

    python benchmarks/bf16_train_parity.py --arch resnet50 --data data/A-train --val-data data/A-val \\
        --epochs 2 --epoch-size 6000 --record docs/results-data/bf16_train_parity-resnet50-A.json

Refuses to run where the CPU or GPU has no native bfloat16 (it is emulated there and the zoo
trains in fp32).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from datetime import date
from pathlib import Path


def train(args, precision: str, out: Path) -> list[dict]:
    command = [sys.executable, "-m", "lenszoo", "train", "--arch", args.arch, "--task", args.task,
               "--data", args.data, "--val-data", args.val_data, "--recipe", "cpu",
               "--epochs", str(args.epochs), "--epoch-size", str(args.epoch_size), "--seed", str(args.seed),
               "--precision", precision, "--channels-last" if args.channels_last else "--no-channels-last",
               "--quiet", "--out", str(out)]
    if not (out / "metrics.jsonl").exists() or len(read_rows(out)) < args.epochs:
        if out.exists():
            command.append("--resume")
        subprocess.run(command, check=True)
    return read_rows(out)


def read_rows(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def accuracy_limit(a: float, b: float, n: int) -> float:
    return 2 * math.sqrt((a * (1 - a) + b * (1 - b)) / n)


def compare(fp32: list[dict], bf16: list[dict], task: str, *, n_val: int, loss_limit: float,
            mae_limit: float) -> dict:
    """The parity rule on two runs' metrics.jsonl rows (same epochs, same images)."""
    if not fp32 or len(fp32) != len(bf16) or any(a["images_seen"] != b["images_seen"] for a, b in zip(fp32, bf16)):
        raise ValueError("the two runs did not see the same images epoch by epoch")
    epochs, within = [], True
    for a, b in zip(fp32, bf16):
        loss_change = abs(b["train"]["loss"] - a["train"]["loss"]) / max(abs(a["train"]["loss"]), 1e-12)
        epochs.append({"epoch": a["epoch"], "images_seen": a["images_seen"],
                       "fp32": {"train_loss": a["train"]["loss"], "val": a["val"], "images_per_s": a["images_per_s"]},
                       "bf16": {"train_loss": b["train"]["loss"], "val": b["val"], "images_per_s": b["images_per_s"]},
                       "train_loss_change": round(loss_change, 4)})
        within &= loss_change <= loss_limit
    a_val, b_val = fp32[-1]["val"], bf16[-1]["val"]
    if task == "classify":
        a, b = a_val["accuracy"], b_val["accuracy"]
        final = {"metric": "val accuracy", "fp32": a, "bf16": b, "change": round(b - a, 4),
                 "limit": round(accuracy_limit(a, b, n_val), 4), "n_val": n_val}
    else:
        a, b = a_val["mae"], b_val["mae"]
        final = {"metric": "val mae", "fp32": a, "bf16": b, "change": round(b - a, 4), "limit": mae_limit}
    within &= abs(final["change"]) <= final["limit"]
    return {"per_epoch": epochs, "final": final, "within_limits": bool(within)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--task", default="classify", choices=("classify", "regress"))
    parser.add_argument("--data", required=True, help="stored train split")
    parser.add_argument("--val-data", required=True, help="stored val split")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--epoch-size", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--loss-limit", type=float, default=0.10, help="relative training-loss change per epoch")
    parser.add_argument("--mae-limit", type=float, default=0.01, help="validation MAE change (dex), regression")
    parser.add_argument("--runs", default="runs/bf16-train-parity", help="where the two runs are written")
    parser.add_argument("--record", help="write the comparison here as JSON")
    args = parser.parse_args(argv)

    import torch

    from lenszoo.runtime import hardware_name, native_bf16

    if not native_bf16(torch.device("cpu")):
        print("error: this CPU has no native bfloat16 (no AMX or avx512_bf16); bf16 is emulated here and the "
              "zoo trains in fp32, so there is nothing to check", file=sys.stderr)
        return 2

    root = Path(args.runs) / f"{args.arch}-{args.task}-{Path(args.data).name}-seed{args.seed}"
    runs = {precision: train(args, precision, root / precision) for precision in ("fp32", "bf16")}
    counts = json.loads((Path(args.val_data) / "manifest.json").read_text())["class_counts"]
    comparison = compare(runs["fp32"][: args.epochs], runs["bf16"][: args.epochs], args.task,
                         n_val=sum(counts.values()), loss_limit=args.loss_limit, mae_limit=args.mae_limit)
    epochs, final, within = comparison["per_epoch"], comparison["final"], comparison["within_limits"]
    speeds = [e["bf16"]["images_per_s"] / e["fp32"]["images_per_s"] for e in epochs]

    record = {"format": "lenszoo-bf16-train-parity", "date": date.today().isoformat(),
              "hardware": hardware_name(torch.device("cpu")), "threads": torch.get_num_threads(),
              "arch": args.arch, "task": args.task, "data": args.data, "val_data": args.val_data,
              "seed": args.seed, "epochs": args.epochs, "epoch_size": args.epoch_size,
              "channels_last": args.channels_last, "limits": {"train_loss_relative": args.loss_limit,
                                                              "final": final["limit"]},
              "per_epoch": epochs, "final": final, "bf16_speedup": round(min(speeds), 2),
              "within_limits": bool(within)}
    for e in epochs:
        print(f"epoch {e['epoch']} ({e['images_seen']:,} images): train loss fp32 {e['fp32']['train_loss']:.4f} "
              f"bf16 {e['bf16']['train_loss']:.4f} ({e['train_loss_change']:.1%}); "
              f"img/s fp32 {e['fp32']['images_per_s']} bf16 {e['bf16']['images_per_s']}")
    print(f"{final['metric']}: fp32 {final['fp32']:.4f} bf16 {final['bf16']:.4f} change {final['change']:+.4f} "
          f"(limit {final['limit']}); bf16 speed-up {record['bf16_speedup']}x; "
          f"{'within the limits' if within else 'OUTSIDE the limits: train in fp32'}")
    if args.record:
        from lenszoo.files import atomic_write_json

        atomic_write_json(Path(args.record), record)
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
