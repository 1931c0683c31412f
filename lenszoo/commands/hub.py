"""`lenszoo publish`, `lenszoo download`, `lenszoo release`: weights between runs, the repo and the Hub."""

from pathlib import Path

import click

from ..hookspecs import hookimpl
from ..tasks import TASKS


@click.command("publish")
@click.argument("path", type=click.Path(), required=False)
@click.option("--repo-id", help="Hub repo ORG/NAME (created if missing).")
@click.option("--tag", help="Also tag the new commit [--release: lenszoo-vVERSION].")
@click.option("--private", is_flag=True, help="Create the repo as private.")
@click.option("--update-manifest", is_flag=True,
              help="Record the repo id and commit sha in weights_manifest.json (the entry must exist).")
@click.option("--release", "whole_release", is_flag=True,
              help="Publish every entry of the manifest to ORG/ARCH-TASK-DATASET and record each commit in it; "
                   "entries already published there are skipped.")
@click.option("--org", help="With --release: the Hub organisation [default: $LENSZOO_HUB_ORG].")
@click.option("--to", "to", type=click.Path(), help="With --release: the folder whose weights_manifest.json to "
              "publish [default: as `lenszoo release`].")
def publish_command(path, repo_id, tag, private, update_manifest, whole_release, org, to):
    """Upload a run's best checkpoint (or a checkpoint folder) with its model card, or with
    --release every released checkpoint.

    The token comes from HF_TOKEN or `hf auth login`; it is never printed."""
    from ..checkpoint import CONFIG_NAME, WEIGHTS_NAME, read_config
    from ..errors import LenszooError
    from ..files import sha256_file
    from ..names import check_repo_id
    from ..pretrained.manifest import find_entry
    from ..pretrained.publish import publish, publish_release
    from ..pretrained.refs import resolve_checkpoint_folder
    from ..pretrained.release import record_publication, release_manifest

    if whole_release:
        if path or repo_id:
            raise LenszooError("--release publishes the whole manifest: give --org, not PATH or --repo-id")
        done = publish_release(org, release_manifest(to), tag=tag, log=click.echo)
        click.echo(f"{sum(status == 'published' for _, status in done)} published, "
                   f"{sum(status == 'unchanged' for _, status in done)} unchanged")
        return
    if not path or not repo_id:
        raise LenszooError("give PATH and --repo-id ORG/NAME (or --release --org ORG for every released checkpoint)")
    check_repo_id(repo_id)
    folder = resolve_checkpoint_folder(path)
    if update_manifest:  # the Hub copy must be what the manifest's sha256s describe
        config = read_config(folder)
        entry = find_entry(config["arch"], config["task"], config["dataset"], tag=config.get("tag"))
        if (sha256_file(folder / WEIGHTS_NAME), sha256_file(folder / CONFIG_NAME)) != \
                (entry["sha256"], entry["config_sha256"]):
            raise LenszooError(f"{folder} is not the released {entry['folder']} (weights or config.json differ from "
                               f"the manifest); publish the released folder: lenszoo publish {entry['folder']} ...")
    result = publish(folder, repo_id, tag=tag, private=private, run_dir=path)
    click.echo(f"published {result.url}")
    click.echo(f"commit    {result.commit_sha}")
    if result.tag:
        click.echo(f"tag       {result.tag}")
    if update_manifest:
        record_publication(config["arch"], config["task"], config["dataset"], repo_id, result.commit_sha,
                           tag=config.get("tag"))
        click.echo("manifest  updated")


@click.command("download")
@click.argument("name", required=False)
@click.option("--task", type=click.Choice(TASKS), default="classify", show_default=True)
@click.option("--dataset", help="The dataset the weights were trained on (needed where there are several).")
@click.option("--all", "everything", is_flag=True, help="Every released checkpoint (for machines that will be "
              "offline: HF_HUB_OFFLINE=1 then loads them from the cache); those not published yet, and not on this "
              "disk, are skipped and named.")
def download_command(name, task, dataset, everything):
    """Fetch NAME (a registered architecture's released weights, or hf-hub:ORG/NAME[@REV]) into the
    Hugging Face cache for later offline use; sha256 checked."""
    from ..errors import LenszooError
    from ..pretrained.refs import resolve_name
    from ..pretrained.source import source_for

    if everything:
        from ..pretrained.manifest import released_weights
        from ..pretrained.source import WeightsUnavailable, locate, skipped_summary

        if name:
            raise LenszooError("--all fetches every released checkpoint; give no NAME with it")
        entries, skipped = released_weights(), []
        for entry in entries:
            try:
                folder = locate(entry).folder
            except WeightsUnavailable as exc:
                if exc.published:  # published, but offline: going online fetches it
                    raise
                skipped.append(exc)  # no one can fetch it yet: the rest still come
                continue
            click.echo(f"{entry.label}: {folder}")
        click.echo(f"{len(entries) - len(skipped)} checkpoints ready for offline use"
                   + (f"; {skipped_summary(skipped, len(entries))}" if skipped else ""))
        return
    if not name:
        raise LenszooError("give NAME (an architecture or hf-hub:ORG/NAME), or --all")
    ref = resolve_name(name, task=task, dataset=dataset, accept=("released", "hub"))
    folder = source_for(ref).folder
    label = f"{name}/{task}/{ref.dataset or dataset}" if ref.kind == "released" else name
    click.echo(f"{label}: {folder}")


@click.command("release")
@click.argument("path", type=click.Path())
@click.option("--to", "to", type=click.Path(),
              help="Folder whose weights/ and weights_manifest.json to update [default: $LENSZOO_MANIFEST's, else "
                   "this source checkout's; required when lenszoo is installed as a package].")
@click.option("--fp16", is_flag=True, help="Store the weights in float16 (half the size; loading casts back). "
              "Evaluate the released folder into RUN/eval/ and release again to record its own test metrics.")
@click.option("--tag", help="Release as tagged weights ARCH.TAG (e.g. robust) beside the default ones, in "
              "weights/ARCH-TASK-DATASET.TAG.")
@click.option("--default", "make_default", is_flag=True,
              help="Make these the weights an untagged name loads (for their arch, task and dataset); with PATH "
                   "a released weights folder, in place.")
@click.option("--retag", help="Instead of releasing: give the released weights at PATH the tag RETAG, in place (their "
              "config.json, card and manifest entry change; the folder and the weights stay).")
@click.option("--metrics-from", "metrics_from", multiple=True, type=click.Path(),
              help="Instead of releasing: add the metrics of these `lenszoo evaluate` results (results.json or its "
                   "folder; repeatable) of the released weights at PATH to their manifest entry, as "
                   "metrics.holdout or metrics.test, and to their model card; the weights and config.json are not touched.")
def release_command(path, to, fp16, tag, make_default, retag, metrics_from):
    """Copy a run's best checkpoint into weights/ and record it in weights_manifest.json.

    Test and holdout metrics from `lenszoo evaluate` of the same weights (RUN/eval/*) are recorded
    too; `--metrics-from` adds them to weights released earlier.

    \b
      lenszoo release runs/c8_steerable-classify-A
      lenszoo release weights/c8_steerable-classify-A --metrics-from runs/eval/c8_steerable-classify-A-holdout
      lenszoo release weights/c8_steerable-classify-A --retag seed      # then another set can be the default
      lenszoo release weights/c8_steerable-classify-A.robust --default"""
    from ..errors import LenszooError
    from ..pretrained.refs import resolve_checkpoint_folder
    from ..pretrained.release import record_evaluations, release, release_manifest, rename_release

    manifest = release_manifest(to)
    if retag or (make_default and not tag and _is_released_folder(path, manifest)):
        if fp16 or tag or metrics_from:
            raise LenszooError("--retag and --default on released weights rename them in place: drop --fp16, --tag "
                               "and --metrics-from")
        entry = rename_release(path, tag=retag, default=make_default, manifest=manifest)
        name = entry.arch + (f".{entry.tag}" if entry.tag else "")
        click.echo(f"{entry.folder} loads as {name} (task={entry.task} dataset={entry.dataset})"
                   + ("; it is the default: an untagged name loads it" if entry.default else "") + f"; {manifest} updated")
        return
    if metrics_from:
        if fp16 or tag or make_default:
            raise LenszooError("--metrics-from adds metrics to weights already released, as they are: drop --fp16, "
                               "--tag and --default")
        entry, splits = record_evaluations(path, metrics_from, manifest=manifest)
        for split in splits:
            click.echo(f"recorded {split} metrics (n={entry['metrics'][split].get('n')}) of {entry['folder']} "
                       f"in {manifest}")
        return
    entry = release(resolve_checkpoint_folder(path), run_dir=path, manifest=manifest, fp16=fp16, tag=tag,
                    default=make_default)
    click.echo(f"released {entry['file']} (sha256 {entry['sha256'][:12]}, {entry['size']:,} bytes) in {manifest}")
    if "test" not in entry["metrics"]:
        click.echo(f"note: no test metrics for exactly these weights under {path}/eval; evaluate "
                   f"{manifest.parent / entry['folder']} with --out {path}/eval/NAME and release again", err=True)


def _is_released_folder(path, manifest) -> bool:
    """Whether ``path`` is the folder of an entry of ``manifest`` (not a run to release)."""
    from ..pretrained.manifest import read_manifest

    if not Path(manifest).is_file():
        return False
    folder = Path(path).resolve()
    return any((Path(manifest).parent / e["folder"]).resolve() == folder for e in read_manifest(manifest)["weights"])


@hookimpl
def register_commands(register):
    for command in (publish_command, download_command, release_command):
        register(command)
