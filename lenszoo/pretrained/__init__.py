"""Released weights and the names that reach them, one way down.

    manifest  where weights_manifest.json is; its entries as frozen ``Weights`` records
    hub       transport to and from the Hugging Face Hub (download, upload), nothing else
    refs      what a name means (ARCH[.TAG], hf-hub:ORG/NAME[@REV], a run or checkpoint folder)
    source    the one decision per name: (source, folder), verified once
    load      the one load path: ``load_model``
    card      the model card a released or published folder carries
    release   ``lenszoo release``: a checkpoint into weights/ and the manifest
    publish   ``lenszoo publish``: a folder, or the whole manifest, onto the Hub

Each module imports only those above it in this list (and lenszoo's lower layers), so nothing
here is imported that a caller does not use.
"""
