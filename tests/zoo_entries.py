"""Manifest entries reshaped for tests that build a zoo of their own."""


def untagged(entry):
    """A released entry as the only weights of its arch/task/dataset: no tag, not marked default
    (the A/B classifiers' seed-protocol weights are tagged `clean` beside a `robust` default)."""
    return {k: v for k, v in entry.items() if k not in ("tag", "default")}
