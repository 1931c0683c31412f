"""Built-in CLI commands, each module a plugin registered through lenszoo's own entry points."""
