"""Built-in architectures, one file per family.

Each module is a lenszoo plugin (an entry point of group ``lenszoo`` in
lenszoo's own pyproject) and knows nothing of training or the Hub.
"""
