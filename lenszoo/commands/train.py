"""``lenszoo train``, ``lenszoo evaluate`` and ``lenszoo report`` (torch is imported only when they run)."""

from __future__ import annotations

import json

import click

from ..errors import LenszooError
from ..hookspecs import hookimpl
from ..inference.options import PRECISIONS

DEFAULT_DATASET = "A"  # what `lenszoo train --arch NAME` trains on when nothing else is said (and says so)

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


def train_options(command):
    """Add one click option per ``TrainConfig`` field: names, defaults, choices and help come from
    the config (and recipe values from ``RECIPES``), so the CLI cannot drift from it."""
    from dataclasses import MISSING, fields

    from ..train.config import TrainConfig, _recipe_values

    for spec in reversed(fields(TrainConfig)):
        meta = spec.metadata
        if not meta.get("cli", True):
            continue
        flag = meta.get("flag") or "--" + spec.name.replace("_", "-")
        help_text = meta["help"]
        if meta.get("choices"):  # checked by TrainConfig, whose errors suggest the closest name
            help_text = f"{help_text}: {', '.join(meta['choices'])}"
        if meta.get("recipe"):
            help_text = f"{help_text} [recipe {_recipe_values(spec.name)}]."
        default = None if spec.default is MISSING else spec.default
        kind, choices = meta.get("kind"), meta.get("choices")
        if kind == "flag":
            option = click.option(flag, spec.name, is_flag=True, default=bool(default), help=help_text)
        elif kind == "negative_flag":
            option = click.option(flag, spec.name, is_flag=True, flag_value=False, default=True, help=help_text)
        elif kind == "switch":
            name = spec.name.replace("_", "-")
            option = click.option(f"--{name}/--no-{name}", spec.name, default=None, help=help_text)
        elif kind == "model_args":
            option = click.option(flag, spec.name, multiple=True, metavar="KEY=VALUE", help=help_text)
        else:
            click_type = str if choices else click.Path() if kind == "path" else kind
            show = default is not None and not meta.get("recipe")
            option = click.option(flag, spec.name, type=click_type, default=default, show_default=show,
                                  help=help_text)
        command = option(command)
    return command


@click.command("train")
@click.option("--resume", is_flag=True, help="Continue the run in --out where its last saved state left off.")
@click.option("--stages", "stages", metavar="PLAN",
              help="Train a curriculum in one run: PLAN is a JSON list of stages (or a file holding one), each "
                   "naming its images and budget, e.g. '[{\"data\": \"data/C-hst-strong-train\", \"val_data\": "
                   "\"data/C-hst-strong-val\", \"epochs\": 8, \"epoch_size\": 12000}, {\"data\": ...}]'; stage k "
                   "starts from stage k-1's best weights, in --out/stage-k; the run's best/ is the last stage's "
                   "(docs/training.md, 'Staged runs').")
@train_options
@click.pass_context
def train_command(ctx, **options):
    """Train ARCH for a task on a dataset (A, B, C-euclid, C-hst or a plugin's); checkpoints, metrics
    and a learning curve go to --out.

    \b
      lenszoo train --arch c8_steerable --dataset A --stream --recipe cpu --max-minutes 15
      lenszoo train --resume --out runs/c8_steerable-classify-A-seed0 --max-minutes 15
      torchrun --nproc-per-node 2 -m lenszoo train --arch resnet50 --data data/B-train
    """
    from click.core import ParameterSource

    from ..train import TrainConfig, train

    given = {name for name in options
             if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
    resume, stages = options.pop("resume"), options.pop("stages")
    options["model_args"] = parse_model_args(options["model_args"])
    from ..train.stages import is_staged_run, read_plan, train_stages

    if stages is not None or (resume and options["out"] and is_staged_run(options["out"])):
        if stages is not None and resume:
            raise LenszooError("--resume continues a staged run from its own record: drop --stages")
        if not options["out"]:
            raise LenszooError("a staged run needs --out RUN_DIR")
        if not resume:
            if not options["arch"]:
                raise LenszooError("no architecture: give --arch NAME (see `lenszoo list`)")
            if options["data"] or options["stream"] or options["init"]:
                raise LenszooError("with --stages, each stage names its data; --data, --stream and --init are "
                                   "for a single-stage run")
        plan = read_plan(stages) if stages is not None else None
        summary = train_stages(TrainConfig(**options), plan, resume=resume, log=_log)
        click.echo(json.dumps({k: summary[k] for k in ("status", "run_dir", "stage", "stages", "images_seen")}))
        return
    if not resume:
        if not options["arch"]:
            raise LenszooError("no architecture: give --arch NAME (see `lenszoo list`)")
        if not options["data"] and not options["stream"]:  # `lenszoo train --arch hnet` just works, and says how
            options["stream"], options["dataset"] = True, options["dataset"] or DEFAULT_DATASET
            click.echo(f"no --data given: training on dataset {options['dataset']} simulated on the fly (--stream "
                       f"--dataset {options['dataset']}), recipe {options['recipe']}; change it with --dataset NAME, "
                       "--data DIR (a `lenszoo simulate` folder) or --recipe cpu (a 15-minute CPU budget)", err=True)
        if not options["out"]:
            dataset = options["dataset"] or "data"
            options["out"] = f"runs/{options['arch']}-{options['task']}-{dataset}-seed{options['seed']}"
    elif not options["out"]:
        raise LenszooError("--resume needs --out RUN_DIR: the run to continue")
    summary = train(TrainConfig(**options), resume=resume, given_fields=given)
    if summary["rank"] == 0:  # one line per run, not per process
        click.echo(json.dumps({k: summary[k] for k in ("status", "run_dir", "epochs_done", "epochs", "images_seen")}))


def _log(message):
    click.echo(message, err=True)


@click.command("evaluate")
@click.argument("model")
@click.option("--dataset", help="Test data: a registered dataset (see `lenszoo list --datasets`) "
              "[default: the one the model was trained on].")
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
@click.option("--tta", is_flag=True, help="Also score with test-time augmentation (the 8 rotations and flips "
              "averaged, as `lenszoo predict --tta`).")
@click.option("--fraction-bins", default="0.2,0.5,1,2,5", show_default=True,
              help="Edges (percent) of the substructure-fraction bins of the sensitivity block, for test data "
                   "that record each image's fraction (a stored dataset C).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="Arithmetic of the forward pass: fp32 (the weights' own figures on any machine), bf16 "
                   "(autocast), or auto (what `lenszoo predict` picks: bf16 where the hardware has it natively "
                   "and the weights keep parity).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--no-verify", "verify", is_flag=True, flag_value=False, default=True,
              help="Skip checking --data against the sha256s in its manifest.")
def evaluate_command(model, dataset, split, data_dir, n_per_class, task, rotations, seed, batch_size, device,
                     workers, out, tta, fraction_bins, precision, as_json, verify):
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
                            workers=workers, out=out, verify=verify, tta=tta, fraction_bins=fraction_bins,
                            precision=precision)
    if as_json:
        click.echo(json.dumps(record, indent=2))


@click.command("report")
@click.argument("results", nargs=-1, required=True)
@click.option("--paper", type=click.Path(), help="JSON with published numbers to show side by side (see docs/training.md).")
@click.option("--rotations", is_flag=True, help="Add rotation-robustness columns.")
@click.option("--out", type=click.Path(), help="Write the Markdown tables here instead of printing them.")
@click.option("--page", type=click.Path(), help="Write the whole results page (tables, the seed's claim checked, "
              "rotations, learning curves, plots) to this Markdown file.")
@click.option("--figures", type=click.Path(), help="Folder for the page's figures [default: beside --page, "
              "PAGE-figures/].")
@click.option("--notes", type=click.Path(), help="Markdown notes, in '## SECTION' parts each printed under the table "
              "it names (classification, regression, claim, ...; docs/training.md), others after the tables.")
@click.option("--records", "records_dir", type=click.Path(file_okay=False),
              help="With --page: also keep every evaluation the page shows (results and plots) in this folder, "
                   "to commit beside the page; passing the folder back regenerates the page without the runs.")
@click.option("--readme", type=click.Path(exists=True, dir_okay=False),
              help="Also rewrite the headline table between the markers in this file (README.md) from the "
                   "weights manifest.")
def report_command(results, paper, rotations, out, page, figures, notes, records_dir, readme):
    """Markdown tables (the seed paper's Tables 1 and 2) from results.json files or folders holding them,
    or with --page the whole generated results page."""
    import shlex
    import sys
    from pathlib import Path

    from ..files import claim_output, output_file, read_user_text
    from ..report import build_report, is_report_file, load_paper, load_results

    for target in (out, page):
        if target:
            claim_output(target, what="lenszoo report", is_ours=is_report_file, kind="file")
    if records_dir:
        from ..report_page import is_records_folder

        if not page:
            raise LenszooError("--records keeps the evaluations a results page shows: give --page too")
        claim_output(records_dir, what="folder of report records", is_ours=is_records_folder, option="--records")
    notes_text = read_user_text(notes, "--notes") if notes else None  # every input read before any output
    readme_text = read_user_text(readme, "--readme") if readme else None
    records = load_results(results)
    published = load_paper(paper) if paper else None
    if readme:
        from ..files import atomic_write_text
        from ..report_page import headline_table, replace_headline
        from ..pretrained.manifest import released_weights

        readme_path = Path(readme)
        table = headline_table([w.to_entry() for w in released_weights()], published["rows"] if published else None)
        atomic_write_text(readme_path, replace_headline(readme_text, table, where=str(readme_path)))
        click.echo(f"headline table in {readme} rewritten", err=True)
    if page:
        from ..report_page import build_page, is_figures_folder

        page_path = Path(page)
        figures_dir = Path(figures) if figures else page_path.with_name(page_path.stem + "-figures")
        claim_output(figures_dir, what="folder of report figures",
                     is_ours=is_figures_folder, option="--figures")
        command = "lenszoo report " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 2 else \
            "lenszoo report --page"
        released = _released()
        text = build_page(records, paper=published, figures=figures_dir, page=page_path, notes=notes_text,
                          command=command, released=released)
        if records_dir:  # before the page, so a page never names records that were not written
            from ..report_page import page_records, write_records

            picked, shown = page_records(records, released)
            kept = write_records(records_dir, picked, shown)
            click.echo(f"{len(kept)} files the page is made of kept in {records_dir}", err=True)
        output_file(page, text, what="lenszoo report", is_ours=is_report_file)
        click.echo(f"results page written to {page} (figures in {figures_dir})", err=True)
        if not out:
            return
    text = build_report(records, published, rotations=rotations)
    if out:
        output_file(out, text, what="lenszoo report", is_ours=is_report_file)
        click.echo(f"report written to {out}", err=True)
    else:
        click.echo(text, nl=False)


def _released() -> dict:
    """The weights the manifest releases, by sha256 (their manifest entries): where a run was
    evaluated before and after its fp16 release, the page shows the released weights, and what
    each cost as the manifest records it."""
    from ..pretrained.manifest import released_weights

    try:
        return {w.sha256: w.to_entry() for w in released_weights()}
    except LenszooError:  # no manifest here: every evaluation is a candidate
        return {}


@hookimpl
def register_commands(register):
    register(train_command)
    register(evaluate_command)
    register(report_command)
