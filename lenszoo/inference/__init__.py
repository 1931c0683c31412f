"""Inference: images in, one row per image out, for ``lenszoo predict`` and ``lenszoo.predict``.

    options.py   the choices predict offers (formats, resize methods, engines, precisions)
    readers.py   one FITS / .npy / PNG file -> a float32 (N, H, W) stack, or the reason not
    inputs.py    finding files, checking images, Chunks from files (worker processes) or arrays
    scorer.py    Scorer: preprocessing, engine (PyTorch / onnxruntime), precision, TTA, identity
    table.py     the results table: columns, an existing table read back and checked (read_table)
    writer.py    Rows of a batch (formatted at once) and RowWriter (create, continue, sync per batch)
    parts.py     torchrun ranks, their parts and markers, predict-merge
    pipeline.py  score(model, inputs, sink): the one orchestrator

Nothing here is imported by ``import lenszoo``; the command line reads ``options`` only.
"""
