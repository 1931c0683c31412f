"""`lenszoo publish`, `lenszoo download`, `lenszoo release`: weights between runs, the repo and the Hub."""

import click

from ..hookspecs import hookimpl
from ..tasks import TASKS


@click.command("publish")
@click.argument("path", type=click.Path())
@click.option("--repo-id", required=True, help="Hub repo ORG/NAME (created if missing).")
@click.option("--tag", help="Also tag the new commit.")
@click.option("--private", is_flag=True, help="Create the repo as private.")
@click.option("--update-manifest", is_flag=True,
              help="Record the repo id and commit sha in weights_manifest.json (the entry must exist).")
def publish_command(path, repo_id, tag, private, update_manifest):
    """Upload a run's best checkpoint (or a checkpoint folder) with its model card.

    The token comes from HF_TOKEN or `hf auth login`; it is never printed."""
    from ..checkpoint import CONFIG_NAME, WEIGHTS_NAME, read_config
    from ..errors import LenszooError
    from ..files import sha256_file
    from ..hub import check_repo_id, publish, resolve_checkpoint_folder
    from ..weights import find_entry, record_publication

    check_repo_id(repo_id)
    folder = resolve_checkpoint_folder(path)
    if update_manifest:  # the Hub copy must be what the manifest's sha256s describe
        config = read_config(folder)
        entry = find_entry(config["arch"], config["task"], config["dataset"])
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
        config = read_config(resolve_checkpoint_folder(path))
        record_publication(config["arch"], config["task"], config["dataset"], repo_id, result.commit_sha)
        click.echo("manifest  updated")


@click.command("download")
@click.argument("name")
@click.option("--task", type=click.Choice(TASKS), default="classify", show_default=True)
@click.option("--dataset", default="A", show_default=True)
def download_command(name, task, dataset):
    """Fetch NAME (a registered architecture's released weights, or hf-hub:ORG/NAME[@REV]) into the
    Hugging Face cache for later offline use; sha256 checked."""
    from ..resolve import checkpoint_folder_for, resolve_name

    ref = resolve_name(name, task=task, dataset=dataset, accept=("released", "hub"))
    folder = checkpoint_folder_for(ref)
    label = f"{name}/{task}/{dataset}" if ref.kind == "released" else name
    click.echo(f"{label}: {folder}")


@click.command("release")
@click.argument("path", type=click.Path())
@click.option("--to", "to", type=click.Path(),
              help="Folder whose weights/ and weights_manifest.json to update [default: $LENSZOO_MANIFEST's, else "
                   "this source checkout's; required when lenszoo is installed as a package].")
@click.option("--fp16", is_flag=True, help="Store the weights in float16 (half the size; loading casts back). "
              "Evaluate the released folder into RUN/eval/ and release again to record its own test metrics.")
def release_command(path, to, fp16):
    """Copy a run's best checkpoint into weights/ and record it in weights_manifest.json.

    Test metrics from `lenszoo evaluate` of the same weights (RUN/eval/*) are recorded too."""
    from ..hub import resolve_checkpoint_folder
    from ..weights import release, release_manifest

    manifest = release_manifest(to)
    entry = release(resolve_checkpoint_folder(path), run_dir=path, manifest=manifest, fp16=fp16)
    click.echo(f"released {entry['file']} (sha256 {entry['sha256'][:12]}, {entry['size']:,} bytes) in {manifest}")
    if "test" not in entry["metrics"]:
        click.echo(f"note: no test metrics for exactly these weights under {path}/eval; evaluate "
                   f"{manifest.parent / entry['folder']} with --out {path}/eval/NAME and release again", err=True)


@hookimpl
def register_commands(register):
    for command in (publish_command, download_command, release_command):
        register(command)
