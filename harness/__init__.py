"""genbench harness: CLI, registries, datasets, runner, records."""

__version__ = "0.1.0"
