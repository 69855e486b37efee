"""Leaderboard suites: declarative YAML files (``harness/suites/leaderboard/<name>.yaml`` or any path).

A suite names the rows (model, its training budget and evaluation options), the data, the seeds,
the columns of the table, the published reference rows with their source, and the claims being
reproduced::

    name: rectified-flow-2d
    title: Rectified flow on a 2-D toy
    description: one paragraph, shown under the title
    dataset: {train: moons-train, eval: moons-test}
    seeds: [0, 1, 2]
    expected_minutes: 6                      # measured CPU time of a full run, for the docs
    defaults:
      train: {steps: 2000, batch_size: 256}  # train options: steps, batch_size, num_train, last_phase_start
      eval: {num_samples: 1000, metrics: [fid, precision, recall, nfe], feature_extractor: identity}
    columns: [fid, precision, recall, straightness, nfe_mean]
    rows:
      - id: rf1                              # [a-z0-9_-]; shown with its label
        label: 1-RF, 1 Euler step
        model: rectified-flow                # any registered model (genbench ls models)
        model_args: {hidden: 128}
        train: {steps: 3000}                 # merged over defaults.train
        eval: {sampler: euler, steps: 1}     # merged over defaults.eval (ModelEvalConfig options)
        group: 1-RF                          # optional: rows of one group form a curve in plots
        role: model                          # or data (a fresh sample of the data), chance (a trivial sampler):
                                             # claims need their model rows to beat every chance row
        trained_if: {high_quality_fraction: 0.5}  # optional: below this the row is under-trained
      - id: rf2
        model: rectified-flow
        reflow: {from: rf1, pairs: 10000, sampler: euler, steps: 100}  # couplings drawn from rf1's model
        init: rf1                            # start from rf1's trained weights (fine-tuning)
      - id: cd
        model: consistency-cd
        teacher: rf1                         # rf1's checkpoint is the model's teacher_checkpoint (distillation)
    references:
      - label: 2-RF + distill (Liu et al. 2023)
        source: Liu et al. 2023, Table 1 (seed 004#5)
        dataset: CIFAR-10
        values: {fid: 4.85}
    claims:
      - id: RF-d
        statement: reflow straightens the flow
        source: Liu et al. 2023, sec. 3 (seed 004#5)
        column: straightness
        less: [rf2, rf1]                     # or greater: [...], ratio: [num, den] + at_least, within: [a, b] + margin;
                                             # less/greater of 2 rows + margin: non-inferiority (a < b + margin)
        confidence: 0.95                     # optional

Rows whose model, arguments, data, training options and seed are the same share one trained
model: training is keyed by that content, not by the row id. Every unknown key, unknown model,
metric or column, and every dangling row reference is an error naming the file and the place.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.leaderboard.claims import KINDS, Claim
from harness.leaderboard.columns import COLUMNS

__all__ = ["LeaderboardSuite", "Reference", "Row", "leaderboard_suite_names", "load_leaderboard_suite"]

SUITE_DIR = Path(__file__).resolve().parents[1] / "suites" / "leaderboard"
_TOP = {"name", "title", "description", "dataset", "seeds", "expected_minutes", "defaults", "columns", "rows",
        "references", "claims"}
_TOP_REQUIRED = {"name", "title", "dataset", "seeds", "columns", "rows"}
_ROW = {"id", "label", "model", "model_args", "dataset", "train", "eval", "group", "init", "reflow", "teacher", "seeds", "note", "role", "trained_if"}
ROLES = ("model", "data", "chance")
_TRAIN = {"steps", "batch_size", "num_train", "last_phase_start"}
"""Train options. ``last_phase_start``: the step at which a two-phase model's last phase begins (the
prior of a VQ-VAE after its autoencoder); the convergence check then looks at the last quarter of that
phase instead of the last quarter of all steps (``harness.leaderboard.execute``)."""
_REFLOW = {"from", "pairs", "sampler", "steps"}
_REF = {"label", "source", "dataset", "values", "note"}
_CLAIM = {"id", "statement", "source", "column", "confidence", *KINDS, "at_least", "margin"}
# ModelEvalConfig options a row may not set: the leaderboard fills them in.
_EVAL_FIXED = {"dataset", "checkpoint", "entry", "model", "model_args", "seed", "device", "use_cache"}
_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


def content_key(spec: dict[str, Any]) -> str:
    """16 hex digits of the sha256 of ``spec`` as sorted-key JSON: the leaderboard's train and eval keys."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Row:
    """One row of our results: a model trained with ``train`` options and evaluated with ``eval`` options."""

    id: str
    label: str
    model: str
    model_args: dict[str, Any]
    train_dataset: str
    eval_dataset: str
    train: dict[str, Any]
    eval: dict[str, Any]
    seeds: tuple[int, ...]
    group: str | None = None
    init: str | None = None
    reflow: dict[str, Any] | None = None
    teacher: str | None = None  # the row whose checkpoint is this model's teacher_checkpoint
    note: str = ""
    role: str = "model"  # one of ROLES: a model, the data itself, or a chance sampler
    trained_if: dict[str, float] = field(default_factory=dict)  # column -> the value it must reach (else under-trained)

    @property
    def upstream(self) -> tuple[str, ...]:
        """Ids of the earlier rows this one starts from (``init``, ``reflow.from``, ``teacher``)."""
        return tuple(r for r in (self.init, (self.reflow or {}).get("from"), self.teacher) if r)

    def train_key(self, seed: int, upstream: dict[str, str]) -> str:
        """Content key of this row's trained model at ``seed``: equal for rows that train the same thing.

        ``upstream`` maps the ids of rows this one depends on (``init``, ``reflow.from``, ``teacher``) to
        their keys. (The ``teacher`` key enters only when set, so the keys of rows without one stay as they were.)
        """
        teacher = {"teacher": upstream[self.teacher]} if self.teacher else {}
        return content_key({**teacher, "model": self.model, "model_args": self.model_args, "dataset": self.train_dataset,
                            "train": self.train, "seed": seed, "init": upstream.get(self.init) if self.init else None,
                            "reflow": {**self.reflow, "from": upstream[self.reflow["from"]]} if self.reflow else None})


@dataclass(frozen=True)
class Reference:
    """A published row: numbers copied from a paper, with its source and the data set they are on."""

    label: str
    source: str
    dataset: str
    values: dict[str, float]
    note: str = ""
    printed: dict[str, str] = field(default_factory=dict)  # each value as the seed prints it ("82.90")


def _reference_value(value: Any, where: str) -> tuple[float, str]:
    """(number, text as printed) of a reference value: a YAML number, or a quoted one to keep trailing zeros."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{where}: reference values must be numbers, got {value!r}")
    text = value.strip() if isinstance(value, str) else (str(int(value)) if float(value).is_integer() else repr(float(value)))
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{where}: reference value {value!r} is not a number") from None
    return number, text


@dataclass(frozen=True)
class LeaderboardSuite:
    name: str
    title: str
    description: str
    train_dataset: str
    eval_dataset: str
    seeds: tuple[int, ...]
    columns: tuple[str, ...]
    rows: tuple[Row, ...]
    references: tuple[Reference, ...] = ()
    claims: tuple[Claim, ...] = ()
    expected_minutes: float | None = None
    source: Path = field(default=Path("."))

    def row(self, row_id: str) -> Row:
        return next(r for r in self.rows if r.id == row_id)


def leaderboard_suite_names() -> list[str]:
    """The built-in leaderboard suites."""
    return sorted(p.stem for p in SUITE_DIR.glob("*.yaml"))


def _keys(mapping: Any, allowed: set[str], where: str, required: set[str] = frozenset()) -> dict[str, Any]:
    if not isinstance(mapping, dict):
        raise ValueError(f"{where} must be a mapping (allowed keys: {sorted(allowed)})")
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    missing = sorted(set(required) - set(mapping))
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}")
    return mapping


def _seeds(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
        raise ValueError(f"{where}: seeds must be a non-empty list of non-negative ints, got {value!r}")
    if len(set(value)) != len(value):
        raise ValueError(f"{where}: seeds repeat: {value}")
    return tuple(value)


def _dataset(value: Any, where: str) -> tuple[str, str]:
    value = _keys(value, {"train", "eval"}, f"{where} dataset", {"train", "eval"})
    return str(value["train"]), str(value["eval"])


def _check_eval(options: dict[str, Any], where: str) -> None:
    """Refuse unknown or leaderboard-owned eval options and unknown metrics, by building the config."""
    from harness.runner import ModelEvalConfig
    from metrics import METRICS

    fixed = sorted(set(options) & _EVAL_FIXED)
    if fixed:
        raise ValueError(f"{where} eval: {fixed} are set by the leaderboard (data set, checkpoint, seed); remove them")
    for metric in options.get("metrics") or ():
        if metric not in METRICS:
            known = METRICS.names()
            raise ValueError(f"{where} eval: unknown metric {metric!r}; known: {', '.join(known)}")
    try:
        ModelEvalConfig.from_dict({**options, "dataset": "x", "checkpoint": "x.pt"})
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where} eval: {err}") from None


def _row(entry: Any, where: str, suite: dict[str, Any], defaults: dict[str, Any], earlier: list[str]) -> Row:
    from harness.models import MODELS

    entry = _keys(entry, _ROW, where, {"id", "model"})
    row_id = entry["id"]
    if not isinstance(row_id, str) or not _ID.match(row_id):
        raise ValueError(f"{where}: id must match {_ID.pattern}, got {row_id!r}")
    where = f"{where} ({row_id})"
    if entry["model"] not in MODELS:
        from harness.core.registry import RegistryError

        try:
            MODELS.get(entry["model"])
        except RegistryError as err:  # its message has the "did you mean"
            raise ValueError(f"{where}: {err}") from None
    model_args = entry.get("model_args") or {}
    if not isinstance(model_args, dict):
        raise ValueError(f"{where}: model_args must be a mapping")
    train = {**defaults.get("train", {}), **(entry.get("train") or {})}
    _keys(train, _TRAIN, f"{where} train")
    for k, v in train.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{where} train: {k} must be a positive int, got {v!r}")
    if "last_phase_start" in train and train["last_phase_start"] > train.get("steps", 0) - 4:
        raise ValueError(f"{where} train: last_phase_start={train['last_phase_start']} needs steps of at least "
                         f"last_phase_start + 4 (steps {train.get('steps')}), for a checkpoint inside that phase")
    eval_options = {**defaults.get("eval", {}), **(entry.get("eval") or {})}
    _check_eval(eval_options, where)
    train_ds, eval_ds = _dataset(entry["dataset"], where) if "dataset" in entry else (suite["train"], suite["eval"])
    if entry.get("init") is not None and entry["init"] not in earlier:
        raise ValueError(f"{where}: init {entry['init']!r} must name an earlier row; earlier rows: {earlier}")
    reflow = entry.get("reflow")
    if reflow is not None:
        reflow = dict(_keys(reflow, _REFLOW, f"{where} reflow", {"from", "pairs"}))
        if reflow["from"] not in earlier:
            raise ValueError(f"{where} reflow: from {reflow['from']!r} must name an earlier row; earlier rows: {earlier}")
        reflow.setdefault("sampler", "euler")
        reflow.setdefault("steps", 100)
    teacher = entry.get("teacher")
    if teacher is not None and teacher not in earlier:
        raise ValueError(f"{where}: teacher {teacher!r} must name an earlier row; earlier rows: {earlier}")
    return Row(
        id=row_id, label=str(entry.get("label", row_id)), model=entry["model"], model_args=dict(model_args),
        train_dataset=train_ds, eval_dataset=eval_ds, train=train, eval=eval_options,
        seeds=_seeds(entry["seeds"], where) if "seeds" in entry else suite["seeds"],
        group=entry.get("group"), init=entry.get("init"), reflow=reflow, teacher=teacher, note=str(entry.get("note", "")),
        role=_role(entry.get("role", "model"), where), trained_if=_trained_if(entry.get("trained_if"), where),
    )


def _trained_if(value: Any, where: str) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(k in COLUMNS and isinstance(v, (int, float)) for k, v in value.items()):
        raise ValueError(f"{where}: trained_if must map known columns to numbers, got {value!r}")
    if any(COLUMNS[k].higher_is_better is None for k in value):
        raise ValueError(f"{where}: trained_if needs columns with a better direction, got {sorted(value)}")
    return {k: float(v) for k, v in value.items()}


def _role(value: Any, where: str) -> str:
    if value not in ROLES:
        raise ValueError(f"{where}: role must be one of {', '.join(ROLES)}, got {value!r}")
    return str(value)


def _claim(entry: Any, where: str, rows: dict[str, Row], columns: tuple[str, ...]) -> Claim:
    entry = _keys(entry, _CLAIM, where, {"id", "statement", "source", "column"})
    where = f"{where} ({entry['id']})"
    kinds = [k for k in KINDS if k in entry]
    if len(kinds) != 1:
        raise ValueError(f"{where}: give exactly one of {', '.join(KINDS)}, got {kinds or 'none'}")
    kind = kinds[0]
    named = entry[kind]
    if not isinstance(named, list) or not all(isinstance(r, str) for r in named):
        raise ValueError(f"{where}: {kind} must be a list of row ids")
    unknown = [r for r in named if r not in rows]
    if unknown:
        raise ValueError(f"{where}: unknown row(s) {unknown}; rows: {sorted(rows)}")
    if entry["column"] not in columns:
        raise ValueError(f"{where}: column {entry['column']!r} is not one of the suite's columns {list(columns)}")
    try:
        return Claim(id=str(entry["id"]), statement=str(entry["statement"]), source=str(entry["source"]),
                     column=entry["column"], kind=kind, rows=tuple(named), at_least=entry.get("at_least"),
                     margin=entry.get("margin"), confidence=float(entry.get("confidence", 0.95)))
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def load_leaderboard_suite(name_or_path: str | Path) -> LeaderboardSuite:
    """Load and validate a built-in suite by name, or a suite file by path."""
    from harness.suites import read_suite_file

    path, data = read_suite_file(name_or_path, SUITE_DIR, leaderboard_suite_names(), kind="leaderboard suite")
    where = f"suite file {path}"
    data = _keys(data, _TOP, where, _TOP_REQUIRED)
    if not isinstance(data["name"], str) or not _ID.match(data["name"]):
        raise ValueError(f"{where}: name must match {_ID.pattern}, got {data['name']!r}")
    train_ds, eval_ds = _dataset(data["dataset"], where)
    seeds = _seeds(data["seeds"], where)
    defaults = _keys(data.get("defaults") or {}, {"train", "eval"}, f"{where} defaults")
    columns = data["columns"]
    if not isinstance(columns, list) or not columns:
        raise ValueError(f"{where}: columns must be a non-empty list")
    bad = [c for c in columns if c not in COLUMNS]
    if bad:
        raise ValueError(f"{where}: unknown column(s) {bad}; known: {', '.join(COLUMNS)}")
    columns = tuple(columns)
    if not isinstance(data["rows"], list) or not data["rows"]:
        raise ValueError(f"{where}: rows must be a non-empty list")
    rows: dict[str, Row] = {}
    for i, entry in enumerate(data["rows"]):
        row = _row(entry, f"{where}, rows[{i}]", {"train": train_ds, "eval": eval_ds, "seeds": seeds}, defaults, list(rows))
        if row.id in rows:
            raise ValueError(f"{where}, rows[{i}]: duplicate row id {row.id!r}")
        for dep in row.upstream:
            missing = sorted(set(row.seeds) - set(rows[dep].seeds))
            if missing:
                raise ValueError(f"{where}, rows[{i}] ({row.id}): starts from row {dep}, which has no seed(s) {missing}")
        rows[row.id] = row
    references = []
    for i, entry in enumerate(data.get("references") or []):
        entry = _keys(entry, _REF, f"{where}, references[{i}]", {"label", "source", "dataset", "values"})
        values = _keys(entry["values"], set(COLUMNS), f"{where}, references[{i}] values")
        references.append(Reference(label=str(entry["label"]), source=str(entry["source"]), dataset=str(entry["dataset"]),
                                    values={k: _reference_value(v, f"{where}, references[{i}] {k}")[0] for k, v in values.items()},
                                    printed={k: _reference_value(v, f"{where}, references[{i}] {k}")[1] for k, v in values.items()},
                                    note=str(entry.get("note", ""))))
    claims = [_claim(entry, f"{where}, claims[{i}]", rows, columns) for i, entry in enumerate(data.get("claims") or [])]
    ids = [c.id for c in claims]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{where}: claim ids repeat: {ids}")
    return LeaderboardSuite(
        name=data["name"], title=str(data["title"]), description=str(data.get("description", "")).strip(),
        train_dataset=train_ds, eval_dataset=eval_ds, seeds=seeds, columns=columns, rows=tuple(rows.values()),
        references=tuple(references), claims=tuple(claims), expected_minutes=data.get("expected_minutes"), source=path,
    )
