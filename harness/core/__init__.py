"""The core layer: protocols, per-example RNG, NFE counting, the generic registry, atomic I/O,
statistics and ODE integration. It imports nothing else of the project (checked by
import-linter, see ``pyproject.toml``); ``metrics`` and ``baselines`` build on it alone."""
