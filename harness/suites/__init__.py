"""Suites: named lists of runs whose records are checked against stored baselines.

A suite is a YAML file (``harness/suites/<name>.yaml`` for the built-in ones, or any path)::

    name: ci-tiny
    description: one line
    baseline_dir: results/baselines/ci-tiny   # relative to the working directory
    runs:
      - name: moons                            # its baseline is <baseline_dir>/moons.json
        command: eval-samples                  # or: eval
        options: {samples: moons-test, reference: moons-train, num_samples: 400}

``options`` map 1:1 onto :class:`harness.eval_samples.SampleEvalConfig` (eval-samples) or
:class:`harness.runner.ModelEvalConfig` (eval) through their ``from_dict``, which rejects
unknown options; ``model_args`` may be written as a mapping. Every other unknown key, at the top
or in a run, is an error naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.eval_samples import SampleEvalConfig, evaluate_samples
from harness.runner import ModelEvalConfig, evaluate_model

__all__ = ["Suite", "SuiteRun", "load_suite", "read_suite_file", "suite_names"]

SUITE_DIR = Path(__file__).resolve().parent
_SUITE_KEYS = {"name", "description", "baseline_dir", "runs"}
_RUN_KEYS = {"name", "command", "options"}
_CONFIGS: dict[str, type[SampleEvalConfig] | type[ModelEvalConfig]] = {
    "eval-samples": SampleEvalConfig, "eval": ModelEvalConfig,
}


@dataclass(frozen=True)
class SuiteRun:
    """One run of a suite: the subcommand and its validated configuration."""

    name: str
    command: str
    config: SampleEvalConfig | ModelEvalConfig

    def execute(self) -> dict[str, Any]:
        """Run it (no progress bars) and return the record."""
        argv = ["genbench", "check", "--suite", f"(run {self.name})"]
        if isinstance(self.config, SampleEvalConfig):
            return evaluate_samples(self.config, progress=False, argv=argv)
        return evaluate_model(self.config, progress=False, argv=argv)


@dataclass(frozen=True)
class Suite:
    """A loaded suite; ``baseline_dir`` is as written (relative paths are taken from the working directory)."""

    name: str
    description: str
    baseline_dir: Path
    runs: tuple[SuiteRun, ...]
    source: Path


def suite_names() -> list[str]:
    """The built-in suites."""
    return sorted(p.stem for p in SUITE_DIR.glob("*.yaml"))


def _check_keys(mapping: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if not isinstance(mapping, dict):
        raise ValueError(f"{where} must be a mapping with keys {sorted(allowed)}")
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    missing = sorted(allowed - set(mapping) - {"description"})
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}")
    return mapping


def _run(entry: Any, where: str) -> SuiteRun:
    entry = _check_keys(entry, _RUN_KEYS, where)
    name, command, options = entry["name"], entry["command"], entry["options"]
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"{where}: name must be a non-empty string without '/', got {name!r}")
    if command not in _CONFIGS:
        raise ValueError(f"{where} ({name}): command {command!r} is not one of {', '.join(_CONFIGS)}")
    if not isinstance(options, dict):
        raise ValueError(f"{where} ({name}): options must be a mapping of {command} options")
    options = dict(options)
    if isinstance(options.get("model_args"), dict):
        options["model_args"] = tuple(options["model_args"].items())
    try:
        config = _CONFIGS[command].from_dict(options)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where} ({name}): {err}") from None
    return SuiteRun(name=name, command=command, config=config)


def read_suite_file(name_or_path: str | Path, folder: Path, names: list[str], kind: str = "suite") -> tuple[Path, Any]:
    """(path, parsed YAML) of a built-in suite ``folder/<name>.yaml`` or of a suite file given by path."""
    import yaml

    path = Path(name_or_path)
    if not path.suffix:
        path = folder / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ValueError(f"unknown {kind} {str(name_or_path)!r}; built-in: {', '.join(names)} "
                             "(or give the path of a suite .yaml file)")
    if not path.is_file():
        raise FileNotFoundError(f"suite file {path} does not exist")
    try:
        return path, yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"suite file {path} is not valid YAML: {err}") from None


def load_suite(name_or_path: str) -> Suite:
    """Load a built-in suite by name, or a suite file by path; every problem names the file."""
    path, data = read_suite_file(name_or_path, SUITE_DIR, suite_names())
    data = _check_keys(data, _SUITE_KEYS, f"suite file {path}")
    runs = data["runs"]
    if not isinstance(runs, list) or not runs:
        raise ValueError(f"suite file {path}: runs must be a non-empty list")
    loaded = tuple(_run(entry, f"suite file {path}, runs[{i}]") for i, entry in enumerate(runs))
    names = [r.name for r in loaded]
    if len(set(names)) != len(names):
        raise ValueError(f"suite file {path}: run names must be unique, got {names}")
    return Suite(name=str(data["name"]), description=str(data.get("description", "")),
                 baseline_dir=Path(str(data["baseline_dir"])), runs=loaded, source=path)
