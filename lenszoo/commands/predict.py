"""``lenszoo predict``: score a folder of cutouts into a table."""

from __future__ import annotations

import sys
import time

import click

from ..errors import LenszooError
from ..hookspecs import hookimpl
from ..inference.options import ENGINES, FORMATS, PRECISIONS, RESIZE_METHODS


@click.command("predict")
@click.argument("model")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(), help="Results table (.csv, .jsonl or .parquet); new, "
              "or an earlier predict output with --resume.")
@click.option("--task", help="classify or regress, for a registered architecture's released weights "
              "[default: classify].")
@click.option("--dataset", help="A, B, C-euclid or C-hst: which released weights (needed where there are several: a default never picks weights for your data).")
@click.option("--format", "fmt", type=click.Choice(list(FORMATS.values())),
              help="Output format [default: from --out's suffix].")
@click.option("--hdu", type=int, help="FITS HDU to read [default: the first holding an image].")
@click.option("--resize", type=click.Choice(RESIZE_METHODS),
              help="Resample images that are not 64×64 with this method (antialiased for bilinear/bicubic); "
                   "without it they are refused.")
@click.option("--tta", is_flag=True, help="Average over the 8 rotations and flips of each image.")
@click.option("--resume", is_flag=True, help="Continue an earlier run into the same --out, skipping the rows "
              "it holds.")
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--workers", type=int, default=1, show_default=True, help="Processes reading files while the "
              "model scores (0: read in the main process, between batches: as fast or faster on a CPU whose cores "
              "the network fills; see docs/predict.md).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--engine", type=click.Choice(ENGINES), default="torch", show_default=True,
              help="What runs the network: PyTorch, or onnxruntime on the CPU (exported and checked first; "
                   "needs lenszoo[onnx]). Its speed against PyTorch, bare and end to end, was measured on one "
                   "machine: see the table in docs/predict.md.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="The forward pass's arithmetic: fp32, or bf16 (bfloat16 autocast, PyTorch only); auto picks bf16 "
                   "where the hardware has it natively (a CUDA GPU, a CPU with AVX512-BF16 or AMX) unless the "
                   "weights' measured bf16 parity is off, else fp32. The rows record which.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--strict", is_flag=True, help="Skip images that do not look like the weights' training images "
              "(the flags column's reasons: sky level, noise, pedestal, centring, pixel scale) instead of scoring "
              "and flagging them.")
@click.option("--list-skipped", is_flag=True, help="Name every input that is not scored on its own stderr line, "
              "as it is found [default: one line per reason when the run ends].")
def predict_command(model, inputs, out, task, dataset, fmt, hdu, resize, tta, resume, batch_size, workers, device,
                    engine, precision, quiet, strict, list_skipped):
    """Score every image in INPUTS (FITS, .fits.gz, .fits.fz, .npy or PNG files, or folders of them) with MODEL
    (a registered architecture's released weights, hf-hub:ORG/NAME@REV, a run directory or a
    checkpoint folder): one row per image with class probabilities (or log10 m_a), the model
    and its weights' sha256. Inputs that cannot be scored are told on stderr, one line per reason
    (every one with --list-skipped), and the rest are scored; the exit status is 3 when some were not.

    \b
      lenszoo predict c8_steerable --dataset B cutouts/ --out scores.csv
      lenszoo predict c8_steerable --task regress --dataset B cube.fits --out masses.jsonl --tta
    """
    from ..locks import hold_lock, lock_beside
    from ..pretrained.refs import resolve_name
    from ..inference.inputs import find_inputs
    from ..inference.options import output_format, require_onnxruntime
    from ..inference.parts import launch_local_rank, launch_rank, part_format, part_path, rank_files

    # Every check that can fail runs before anything is written.
    if batch_size < 1:
        raise LenszooError(f"--batch-size must be >= 1, got {batch_size}")
    if workers < 0:
        raise LenszooError(f"--workers must be >= 0, got {workers}")
    if hdu is not None and hdu < 0:
        raise LenszooError(f"--hdu must be >= 0, got {hdu}")
    fmt = output_format(out, fmt)
    rank, world = launch_rank()
    local_rank = launch_local_rank()
    if engine == "onnxruntime":
        if device not in ("auto", "cpu"):
            raise LenszooError(f"--engine onnxruntime runs on the CPU; drop --device {device} or use --engine torch")
        if precision == "bf16":
            raise LenszooError("--precision bf16 runs with --engine torch; onnxruntime scores in fp32: drop "
                               "--precision or use --engine torch")
        require_onnxruntime()
        device = "cpu"
    resolve_name(model, task=task, dataset=dataset)  # a wrong name fails before the inputs are searched
    files, problems = find_inputs(inputs)
    if not files:
        raise LenszooError("no image files to score: " + "; ".join(map(str, problems)))
    target, target_fmt = out, fmt
    if world > 1:  # under torchrun: this rank scores its block of the inputs into its own part
        files = rank_files(files, rank, world)
        target, target_fmt = part_path(out, rank, world, fmt), part_format(fmt)
    with hold_lock(lock_beside(target), target=target):  # held while this command writes target
        return _predict_into(model, files, problems, out=out, target=target, target_fmt=target_fmt, task=task,
                             dataset=dataset, hdu=hdu, resize=resize, tta=tta, resume=resume, batch_size=batch_size,
                             workers=workers, device=device, local_rank=local_rank, engine=engine, precision=precision,
                             quiet=quiet, rank=rank, world=world, list_skipped=list_skipped, strict=strict)


def _predict_into(model, files, problems, *, out, target, target_fmt, task, dataset, hdu, resize, tta, resume,
                  batch_size, workers, device, local_rank, engine, precision, quiet, rank, world, list_skipped, strict):
    """Score ``files`` into ``target`` (``--out``, or this rank's part), holding its lock."""
    from pathlib import Path

    from ..contract import model_contract
    from ..files import is_disk_full
    from ..inference.inputs import SkipReport, file_chunks
    from ..inference.options import SOME_FAILED
    from ..inference.parts import check_done_marker, clear_done_marker, write_done_marker
    from ..inference.pipeline import flag_summary, score
    from ..inference.scorer import Scorer, input_size
    from ..inference.table import columns_for
    from ..inference.writer import RowWriter
    from ..pretrained.load import load_model
    from ..runtime import native_bf16, resolve_device

    target = Path(target)
    if world > 1:
        check_done_marker(target)
    # Read and checked, nothing written: a file that is not this command's earlier output stays as it is.
    writer = RowWriter(target, fmt=target_fmt, resume=resume)
    torch_device = resolve_device(device, local_rank)
    loaded = load_model(model, task=task, dataset=dataset, device=torch_device)
    scorer = Scorer(loaded, tta=tta, device=torch_device, engine=engine, precision=precision)
    task, name, sha = scorer.task, scorer.name, scorer.sha
    writer.check_same(sha, tta, scorer.precision, columns=columns_for(task))
    contract = model_contract(loaded)
    if rank == 0 and contract is None:
        click.echo(f"note: {name} states no input contract (trained on no registered dataset), so images are "
                   "not checked; the flags column stays empty", err=True)
    if rank == 0 and precision == "bf16" and not native_bf16(torch_device):
        click.echo(f"note: {torch_device.type} has no native bfloat16, so bf16 is emulated here and slower than "
                   "fp32; --precision auto picks what this machine runs fastest", err=True)
    if world > 1:  # a restarted part is unfinished until this run of it ends
        clear_done_marker(target)
    skips = SkipReport(lambda message: click.echo(message, err=True), each=list_skipped)
    for problem in problems if rank == 0 else []:
        skips.add(problem)
    bar = None
    if not quiet and rank == 0:
        from tqdm import tqdm

        stderr = sys.stderr
        bar = tqdm(unit="img", desc="scoring", file=stderr, dynamic_ncols=True)
        skips.echo = lambda message: bar.write(message, file=stderr)  # tqdm.write defaults to stdout

    def report(problem):
        skips.add(problem)
        if bar is not None:
            bar.set_postfix_str(f"{len(skips)} skipped", refresh=False)

    started = time.perf_counter()
    chunks = file_chunks(files, workers=workers, hdu=hdu, resize=resize, skip=writer.done, size=input_size(loaded))
    try:
        counts = score(loaded, chunks, writer, scorer=scorer, batch_size=batch_size, contract=contract,
                       strict=strict, on_problem=report, progress=bar.update if bar is not None else None)
        writer.close()
        if world > 1:
            write_done_marker(target, rows=writer.rows, task=task, tta=tta, precision=scorer.precision, sha=sha,
                              counts=counts)
    except OSError as exc:
        writer.abort()  # every finished batch is on disk
        if not is_disk_full(exc):
            raise
        again = "the same torchrun command" if world > 1 else "the same command"
        advice = (f"{again} with --resume: it keeps the rows in {writer.journal} and scores the rest"
                  if writer.journal.exists() else f"{again} again (nothing was written to {target})")
        raise LenszooError(f"{exc.strerror or 'No space left on device'}: {exc.filename or writer.journal}; free "
                           f"some disk space (or choose another --out), then run {advice}") from None
    except BaseException:
        writer.abort()  # every finished batch is on disk; --resume continues
        raise
    finally:
        if bar is not None:
            bar.close()
    skips.echo = lambda message: click.echo(message, err=True)
    skips.summarise()
    failed = len(skips)
    flagged = flag_summary(counts)
    if flagged and not strict:
        click.echo(flagged, err=True)
    seconds = time.perf_counter() - started
    rate = counts["images"] / seconds if seconds > 0 else 0.0
    already = sum(map(len, writer.done.values()))
    resumed = f" ({already} already in {out})" if already else ""
    if world > 1:
        where = f"part {rank + 1} of {world} in {target}; merge with `lenszoo predict-merge --out {out}`"
    elif writer.rows or Path(out).exists():
        where = f"results in {out}"
    else:
        where = f"no rows, so {out} was not written"
    click.echo(f"scored {counts['images']} images from {counts['files']} files in {seconds:.1f} s "
               f"({rate:,.0f} img/s, {scorer.precision}) with {name}{resumed}; {failed} not scored; {where}", err=True)
    return SOME_FAILED if failed else 0


@click.command("predict-merge")
@click.option("--out", required=True, type=click.Path(), help="The --out the torchrun predict was given.")
@click.option("--format", "fmt", type=click.Choice(list(FORMATS.values())),
              help="Output format [default: from --out's suffix].")
def predict_merge_command(out, fmt):
    """Join the parts a `torchrun --nproc-per-node N -m lenszoo predict ... --out OUT` wrote (one per
    process, in input order) into OUT. The parts are left in place."""
    from ..inference.options import output_format
    from ..inference.parts import merge_parts

    merged = merge_parts(out, fmt=output_format(out, fmt))  # holds the locks of --out and of every part
    click.echo(f"merged {merged['parts']} parts, {merged['rows']} rows, into {out}", err=True)


@hookimpl
def register_commands(register):
    register(predict_command)
    register(predict_merge_command)
