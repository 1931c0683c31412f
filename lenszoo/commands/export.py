"""``lenszoo export``: a model as an ONNX graph."""

from __future__ import annotations

import json

import click

from ..hookspecs import hookimpl


@click.command("export")
@click.argument("model")
@click.option("--onnx", "onnx_path", required=True, type=click.Path(), help="The .onnx file to write (new).")
@click.option("--task", help="classify or regress, for a registered architecture's released weights.")
@click.option("--dataset", help="A, B, C-euclid or C-hst: which released weights (needed where there are several: a default never picks weights for your data).")
@click.option("--opset", type=click.IntRange(13, 21), default=17, show_default=True, help="ONNX opset.")
@click.option("--no-check", "check", is_flag=True, flag_value=False, default=True,
              help="Skip comparing onnxruntime's outputs with PyTorch's.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written and checked as JSON.")
def export_command(model, onnx_path, task, dataset, opset, check, as_json):
    """Write MODEL (as everywhere: a registered architecture's released weights, hf-hub:ORG/NAME@REV,
    a run directory or a checkpoint folder) as an ONNX graph taking normalised (N, 1, 64, 64)
    images, and check it against PyTorch with onnxruntime.

    \b
      lenszoo export c8_steerable --dataset B --onnx c8-classify-B.onnx
    """
    from ..export import check_onnx_path, export_onnx
    from ..locks import hold_lock, lock_beside
    from ..pretrained.load import load_model

    path = check_onnx_path(onnx_path)  # before the lock and the model
    with hold_lock(lock_beside(path), target=path, option="--onnx"):  # one export writes a path at a time
        check_onnx_path(path)  # an export that finished while this one started
        loaded = load_model(model, task=task, dataset=dataset)
        result = export_onnx(loaded, path, opset=opset, check=check)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    checked = (f"; onnxruntime matches PyTorch within {result['max_relative_difference']:.1g} of the outputs' scale "
               f"on {result['checked_images']} images") if check else "; not checked"
    click.echo(f"wrote {onnx_path} (opset {opset}){checked}; inputs: images normalised with model.preprocess",
               err=True)


@hookimpl
def register_commands(register):
    register(export_command)
