"""``lenszoo train``, ``lenszoo evaluate`` and ``lenszoo report`` (torch is imported only when they run)."""

from __future__ import annotations

import json

import click

from ..errors import LenszooError
from ..hookspecs import hookimpl

# CLI option -> TrainConfig field, for the options whose values --resume checks.
_TRAIN_FIELDS = ("arch", "task", "dataset", "out", "data", "val_data", "stream", "recipe", "lr", "batch_size",
                 "epochs", "schedule", "augment", "epoch_size", "weight_decay", "precision", "channels_last",
                 "val_size", "val_fraction",
                 "model_args", "seed", "device", "workers", "threads", "max_minutes", "save_every_minutes",
                 "save_every_steps", "quiet", "verify")


def parse_model_args(pairs) -> dict:
    """``KEY=VALUE`` pairs; values are read as JSON when they parse (numbers, lists), else as text."""
    args = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise LenszooError(f"--model-arg {pair!r} is not KEY=VALUE; write e.g. --model-arg width=16")
        try:
            args[key] = json.loads(value)
        except json.JSONDecodeError:
            args[key] = value
    return args


@click.command("train")
@click.option("--arch", help="Architecture to train (see `lenszoo list`).")
@click.option("--task", default="classify", show_default=True, help="classify or regress (log10 m_a).")
@click.option("--dataset", help="A (Euclid-like) or B (HST-like); with --data it is read from the data.")
@click.option("--data", type=click.Path(), help="A stored dataset written by `lenszoo simulate` (train split).")
@click.option("--val-data", type=click.Path(), help="A stored validation dataset (default: hold out --val-fraction "
              "of --data, or simulate --val-size images with --stream).")
@click.option("--stream", is_flag=True, help="Simulate training images on the fly (fixed-size epochs).")
@click.option("--recipe", default="paper", show_default=True,
              help="Defaults for the options below: paper (Adam 1e-4, batch 64, 10 epochs, no augmentation) "
                   "or cpu (lr 1e-3, cosine, rot90+flip, 24 epochs of 12,000 streamed images: c8_steerable's 15 minutes on 2 cores).")
@click.option("--epochs", type=int, help="Epochs (recipe: 10 / 24).")
@click.option("--epoch-size", type=int, help="Images per epoch (recipe paper: one pass over --data, 90,000 with "
              "--stream; cpu: 12,000, or each built-in's 15-minute budget).")
@click.option("--batch-size", type=int, help="Images per step and process (recipe: 64).")
@click.option("--lr", type=float, help="Adam learning rate (recipe: 1e-4 / 1e-3).")
@click.option("--weight-decay", type=float, help="Adam weight decay (recipe: 0).")
@click.option("--schedule", help="constant, cosine or onecycle, per step (recipe: constant / cosine).")
@click.option("--augment", help="none, flip, rot90 or rot90flip: exact pixel-grid symmetries (recipe: none / rot90flip).")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]),
              help="fp32, or bf16 autocast for the forward pass (weights, loss and optimizer stay fp32) "
                   "[recipe: fp32; cpu: each built-in's faster one].")
@click.option("--channels-last/--no-channels-last", default=None,
              help="Train in channels_last memory format [recipe: off; cpu: on where it is faster].")
@click.option("--val-size", type=int, default=3000, show_default=True, help="Validation images simulated with --stream.")
@click.option("--val-fraction", type=float, default=0.1, show_default=True,
              help="Share of --data held out for validation when there is no --val-data.")
@click.option("--model-arg", "model_args", multiple=True, metavar="KEY=VALUE", help="Architecture argument (repeatable).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds initialisation, data order, augmentation, stream.")
@click.option("--device", default="auto", show_default=True, help="auto (a GPU when present), cpu, cuda or cuda:N.")
@click.option("--workers", type=int, default=0, show_default=True,
              help="DataLoader worker processes (simulate --stream images in parallel); results do not depend on it.")
@click.option("--threads", type=int, help="Torch threads per process (default: the cores / processes per machine).")
@click.option("--out", type=click.Path(), help="Run directory [default: runs/ARCH-TASK-DATASET-seedSEED].")
@click.option("--resume", is_flag=True, help="Continue the run in --out where its last saved state left off.")
@click.option("--max-minutes", type=float, help="Stop cleanly, with a resumable state, after this many minutes.")
@click.option("--save-every-minutes", type=float, default=10.0, show_default=True,
              help="Also save a resumable state mid-epoch this often.")
@click.option("--save-every-steps", type=int, help="Also save a resumable state every N optimizer steps.")
@click.option("--quiet", is_flag=True, help="No progress bar or per-epoch lines.")
@click.option("--no-verify", "verify", is_flag=True, flag_value=False, default=True,
              help="Skip checking stored data against the sha256s in its manifest (a few seconds per GB).")
@click.pass_context
def train_command(ctx, **options):
    """Train ARCH for a task on dataset A or B; checkpoints, metrics and a learning curve go to --out.

    \b
      lenszoo train --arch c8_steerable --dataset A --stream --recipe cpu --max-minutes 15
      lenszoo train --resume --out runs/c8_steerable-classify-A-seed0 --max-minutes 15
      torchrun --nproc-per-node 2 -m lenszoo train --arch resnet50 --data data/B-train
    """
    from click.core import ParameterSource

    from ..train import TrainConfig, train

    given = {name for name in _TRAIN_FIELDS
             if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
    resume = options.pop("resume")
    options["model_args"] = parse_model_args(options["model_args"])
    if not resume:
        if not options["arch"]:
            raise LenszooError("no architecture: give --arch NAME (see `lenszoo list`)")
        if not options["out"]:
            dataset = options["dataset"] or "data"
            options["out"] = f"runs/{options['arch']}-{options['task']}-{dataset}-seed{options['seed']}"
    elif not options["out"]:
        raise LenszooError("--resume needs --out RUN_DIR: the run to continue")
    summary = train(TrainConfig(**options), resume=resume, given_fields=given)
    if summary["rank"] == 0:  # one line per run, not per process
        click.echo(json.dumps({k: summary[k] for k in ("status", "run_dir", "epochs_done", "epochs", "images_seen")}))


@click.command("evaluate")
@click.argument("model")
@click.option("--dataset", help="Test data: A or B [default: the dataset the model was trained on].")
@click.option("--split", default="test", show_default=True, help="train, val or test (simulated data only differ by seed stream).")
@click.option("--data", "data_dir", type=click.Path(), help="A stored dataset to evaluate on instead of simulating.")
@click.option("--n-per-class", type=int, default=2000, show_default=True, help="Images per class to simulate.")
@click.option("--task", help="classify or regress, for a pretrained name [default: the model's].")
@click.option("--rotations", is_flag=True, help="Also evaluate on the test images turned by 90/180/270° and random angles.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the simulated test stream and random angles.")
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--workers", type=int, default=0, show_default=True, help="Worker processes for simulation.")
@click.option("--out", type=click.Path(), help="Results folder [default: RUN_DIR/eval/DATASET-SPLIT for a run]; "
              "new, empty, or an earlier evaluation's.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--no-verify", "verify", is_flag=True, flag_value=False, default=True,
              help="Skip checking --data against the sha256s in its manifest.")
def evaluate_command(model, dataset, split, data_dir, n_per_class, task, rotations, seed, batch_size, device,
                     workers, out, as_json, verify):
    """Test MODEL (a registered architecture's released weights, hf-hub:ORG/NAME[@REV], a run directory
    or a checkpoint folder; a path must look like one, e.g. ./NAME): metrics, plots, results.json.

    \b
      lenszoo evaluate runs/c8_steerable-classify-A-seed0 --dataset A --rotations
      lenszoo evaluate weights/c8_steerable-regress-B --data data/B-test
    """
    from ..evaluate import run_evaluation

    if workers < 0:
        raise LenszooError(f"--workers must be >= 0, got {workers}")
    record = run_evaluation(model, dataset=dataset, split=split, data_dir=data_dir, n_per_class=n_per_class,
                            task=task, rotations=rotations, seed=seed, batch_size=batch_size, device=device,
                            workers=workers, out=out, verify=verify)
    if as_json:
        click.echo(json.dumps(record, indent=2))


@click.command("report")
@click.argument("results", nargs=-1, required=True)
@click.option("--paper", type=click.Path(), help="JSON with published numbers to show side by side (see docs/training.md).")
@click.option("--rotations", is_flag=True, help="Add rotation-robustness columns.")
@click.option("--out", type=click.Path(), help="Write the Markdown here instead of printing it.")
def report_command(results, paper, rotations, out):
    """Markdown tables (the seed paper's Tables 1 and 2) from results.json files or folders holding them."""
    from ..files import claim_output, output_file
    from ..report import build_report, is_report_file, load_paper, load_results

    if out:
        claim_output(out, what="lenszoo report", is_ours=is_report_file, kind="file")
    text = build_report(load_results(results), load_paper(paper) if paper else None, rotations=rotations)
    if out:
        output_file(out, text, what="lenszoo report", is_ours=is_report_file)
        click.echo(f"report written to {out}", err=True)
    else:
        click.echo(text, nl=False)


@hookimpl
def register_commands(register):
    register(train_command)
    register(evaluate_command)
    register(report_command)
