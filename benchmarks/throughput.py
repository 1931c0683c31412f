"""Throughput of every registered architecture on the CPU, as a Markdown table.

For each architecture: parameters, forward FLOPs per image, build time,
training images/s (Adam steps at batch 64) in fp32 and under bfloat16 autocast,
each also in channels_last memory format, and inference images/s
(``torch.inference_mode`` at batches 64 and 256, fp32; at 256 also in bf16 and
through ``model.export()`` where a model has one). The fastest training
variant is what ``lenszoo train --recipe cpu`` uses for the architecture. In the same run it times a C8 steerable CNN with the escnn tutorial's
widths (24/48/48/96/96/64 regular fields, escnn's own batch norm and
antialiased pooling) and prints how much faster each architecture is.

Timings are the best of several steps (the fastest step is the one least
disturbed by other processes on a shared machine), after one warm-up step.
"build s" is the construction time; the first model that needs escnn or timm
also pays for importing it (~3-4 s).

    python benchmarks/throughput.py                     # everything, ~3 min on 2 cores
    python benchmarks/throughput.py --arch c8_steerable --quick
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F

TUTORIAL_WIDTHS = (24, 48, 48, 96, 96, 64)


def build_tutorial_reference(task="classify"):
    """The escnn tutorial's C8 CNN on a 64x64 one-channel image: six R2Conv /
    InnerBatchNorm / ReLU blocks of 24/48/48/96/96/64 regular fields, antialiased
    pooling after the 2nd, 4th and 6th, group pooling, then (instead of the
    tutorial's flatten) a spatial mean and an MLP head."""
    from escnn import gspaces
    from escnn import nn as enn

    from lenszoo.archs.steerable import _use_deterministic_escnn_svd
    from lenszoo.tasks import num_outputs

    _use_deterministic_escnn_svd()
    gspace = gspaces.rot2dOnR2(N=8)
    in_type = enn.FieldType(gspace, [gspace.trivial_repr])
    layers, field_type = [], in_type
    for index, (width, kernel, padding) in enumerate(zip(TUTORIAL_WIDTHS, (7, 5, 5, 5, 5, 5), (1, 2, 2, 2, 2, 1))):
        out_type = enn.FieldType(gspace, width * [gspace.regular_repr])
        layers += [enn.R2Conv(field_type, out_type, kernel, padding=padding, bias=False),
                   enn.InnerBatchNorm(out_type), enn.ReLU(out_type, inplace=True)]
        if index in (1, 3):
            layers.append(enn.PointwiseAvgPoolAntialiased(out_type, sigma=0.66, stride=2))
        field_type = out_type
    layers += [enn.PointwiseAvgPoolAntialiased(field_type, sigma=0.66, stride=1, padding=0),
               enn.GroupPooling(field_type)]
    body = enn.SequentialModule(*layers)

    class TutorialC8(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = body
            self.head = torch.nn.Sequential(torch.nn.Linear(TUTORIAL_WIDTHS[-1], 64), torch.nn.ELU(),
                                            torch.nn.Linear(64, num_outputs(task)))

        def forward(self, x):
            features = self.body(enn.GeometricTensor(x, in_type)).tensor
            return self.head(features.mean(dim=(2, 3)))

    return TutorialC8()


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def forward_flops(model) -> int | None:
    """Forward FLOPs for one image (eval mode), or None where the counter cannot trace the model."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.randn(1, 1, 64, 64))
    except Exception:  # some ops have no FLOP formula; the column then says "-"
        return None
    return counter.get_total_flops() or None


def best_rate(step, batch_size: int, repeats: int, warmup_batch: int) -> float:
    """Images/s of the fastest of ``repeats`` timed ``step(batch_size)`` calls, after
    one warm-up call on ``warmup_batch`` images."""
    step(warmup_batch)
    fastest = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        step(batch_size)
        fastest = min(fastest, time.perf_counter() - start)
    return batch_size / fastest


TRAIN_VARIANTS = (("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True))


def variant_name(precision: str, channels_last: bool) -> str:
    return precision + (" CL" if channels_last else "")


def training_rate(model, task: str, batch_size: int, repeats: int, warmup_batch: int,
                  precision: str = "fp32", channels_last: bool = False) -> float:
    """Training steps as ``lenszoo train`` takes them: forward under the precision's autocast,
    loss, backward and Adam in fp32."""
    from lenszoo.runtime import autocast

    device = torch.device("cpu")
    model = model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = F.cross_entropy if task == "classify" else F.mse_loss
    model.train()

    def step(n):
        images = torch.randn(n, 1, 64, 64)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = torch.randint(0, 3, (n,)) if task == "classify" else torch.randn(n, 1)
        optimizer.zero_grad(set_to_none=True)
        with autocast(precision, device):
            outputs = model(images)
        loss_fn(outputs.float(), targets).backward()
        optimizer.step()

    try:
        return best_rate(step, batch_size, repeats, warmup_batch)
    finally:
        model.to(memory_format=torch.contiguous_format)


def inference_rate(model, batch_size: int, repeats: int, warmup_batch: int, precision: str = "fp32") -> float:
    from lenszoo.runtime import autocast

    model.eval()

    def step(n):
        images = torch.randn(n, 1, 64, 64)
        with torch.inference_mode(), autocast(precision, torch.device("cpu")):
            model(images)

    return best_rate(step, batch_size, repeats, warmup_batch)


def measure(name, build, task, *, train_batch, infer_batches, repeats, warmup_batch=None, variants=TRAIN_VARIANTS):
    """One table row. The warm-up step uses the timed batch size unless ``warmup_batch`` is given;
    the exported model is timed at the largest inference batch."""
    start = time.perf_counter()
    model = build(task)
    row = {"arch": name, "build_s": time.perf_counter() - start, "params": count_parameters(model)}
    row["flops"] = forward_flops(model)
    row["train_variants"] = {}
    for precision, channels_last in variants:
        row["train_variants"][variant_name(precision, channels_last)] = training_rate(
            model, task, train_batch, repeats, warmup_batch or train_batch, precision, channels_last)
    row["fastest"] = max(row["train_variants"], key=row["train_variants"].get)
    row["train"] = row["train_variants"][row["fastest"]]
    row["infer"] = {batch: inference_rate(model, batch, repeats, warmup_batch or batch) for batch in infer_batches}
    largest = max(infer_batches)
    row["infer_bf16"] = inference_rate(model, largest, repeats, warmup_batch or largest, "bf16") \
        if ("bf16", False) in variants else None
    export = getattr(model, "export", None)
    row["exported"] = inference_rate(export(), largest, repeats, warmup_batch or largest) if callable(export) else None
    return row


def best_inference(row) -> float:
    return max([*row["infer"].values(), row["exported"] or 0, row.get("infer_bf16") or 0])


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def results_table(rows, reference, train_batch, infer_batches) -> str:
    names = [variant_name(*v) for v in TRAIN_VARIANTS]
    header = ["arch", "params", "MFLOP/img", "build s", *(f"train {name} (bs {train_batch})" for name in names),
              "fastest", "15-min budget (images)",
              *(f"infer fp32 (bs {batch})" for batch in infer_batches), f"infer bf16 (bs {max(infer_batches)})",
              f"exported infer (bs {max(infer_batches)})", "train / reference", "infer / reference"]
    from lenszoo.markdown import table

    body = []
    for row in rows:
        if "error" in row:
            body.append([row["arch"], f"failed: {row['error']}", *[""] * (len(header) - 2)])
            continue
        ratio_train = row["train"] / reference["train"] if reference else None
        ratio_infer = best_inference(row) / best_inference(reference) if reference else None
        # the reference is timed at one small batch: show that rate in every inference column
        infer = [row["infer"].get(batch, max(row["infer"].values())) for batch in infer_batches]
        cells = [row["arch"], f"{row['params']:,}", _fmt(row["flops"] and row["flops"] / 1e6, ".0f"),
                 f"{row['build_s']:.1f}", *(_fmt(row["train_variants"].get(name), ".1f") for name in names),
                 row["fastest"], f"{row['train'] * 900:,.0f}", *(f"{rate:.0f}" for rate in infer),
                 _fmt(row.get("infer_bf16"), ".0f"), _fmt(row["exported"], ".0f"),
                 _fmt(ratio_train, ".0f") + ("x" if ratio_train else ""),
                 _fmt(ratio_infer, ".0f") + ("x" if ratio_infer else "")]
        body.append(cells)
    return table(header, body)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", action="append", metavar="NAME",
                        help="architecture name or fnmatch pattern (repeatable); default: all registered")
    parser.add_argument("--task", choices=("classify", "regress"), default="classify")
    parser.add_argument("--quick", action="store_true",
                        help="fewer timed steps and a smaller reference batch (a rough number in well under a minute "
                             "per architecture)")
    parser.add_argument("--no-reference", action="store_true", help="skip the escnn tutorial-width reference")
    parser.add_argument("--threads", type=positive_int, default=2, help="torch threads (default 2, the target machine)")
    parser.add_argument("--train-batch", type=positive_int, default=64, metavar="N")
    parser.add_argument("--infer-batch", type=positive_int, action="append", metavar="N",
                        help="inference batch size (repeatable; default: 64 and 256)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import lenszoo
    from lenszoo.errors import LenszooError

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    try:
        names = lenszoo.list_models(args.arch, task=args.task)
        if not names:
            raise LenszooError(f"no architecture matches {', '.join(args.arch)}; see `lenszoo list`")
    except LenszooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    repeats = 2 if args.quick else 3
    infer_batches = sorted(set(args.infer_batch or (64, 256)))
    rows = []
    for name in names:
        print(f"timing {name} ...", file=sys.stderr, flush=True)
        try:
            rows.append(measure(name, lambda task, name=name: lenszoo.create_model(name, task=task), args.task,
                                train_batch=args.train_batch, infer_batches=infer_batches, repeats=repeats))
        except Exception as exc:  # one broken architecture should not hide the others' numbers
            rows.append({"arch": name, "error": f"{type(exc).__name__}: {exc}".splitlines()[0]})
    reference = None
    # the reference trains at ~1.5 and infers at ~5 images/s on 2 cores: one timed step
    # each, on small batches (its cost per image hardly depends on the batch size)
    reference_batches = (8, 8) if args.quick else (16, 32)
    if not args.no_reference:
        print("timing escnn tutorial-width C8 reference ...", file=sys.stderr, flush=True)
        reference = measure("escnn tutorial C8 (reference)", build_tutorial_reference, args.task,
                            train_batch=reference_batches[0], infer_batches=[reference_batches[1]],
                            repeats=1, warmup_batch=2, variants=(("fp32", False),))
        rows.append(reference)
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, task {args.task}; "
          f"images/s are the best of {repeats} timed steps\n")
    print(results_table(rows, reference, args.train_batch, infer_batches))
    if reference:
        print(f"\nreference timed on one step each at train batch {reference_batches[0]}, "
              f"infer batch {reference_batches[1]}")
        for row in rows:
            if row is not reference and "error" not in row:
                print(f"{row['arch']}: {row['train'] / reference['train']:.0f}x the reference's training speed, "
                      f"{best_inference(row) / best_inference(reference):.0f}x its inference speed")
    for row in rows:
        if row is not reference and "error" not in row:
            fp32 = row["train_variants"]["fp32"]
            print(f"{row['arch']}: fastest training {row['fastest']} at {row['train']:.1f} img/s, "
                  f"{row['train'] / fp32:.2f}x fp32; 15 minutes = {row['train'] * 900:,.0f} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
