"""Run a leaderboard suite: train each row's model (or reuse it), evaluate it, store the record.

Layout of what is written::

    <results>/<suite>/<row>/seed<k>.json          the eval record + a "leaderboard" section (committed)
    <results>/<suite>/<row>/seed<k>.samples.npz   2,000 generated rows or 64 images, first seed only (committed)
    <work>/checkpoints/<train_key>.pt              trained models, keyed by content (not committed)
    <work>/checkpoints/<train_key>.step<3S/4>.pt   the same training at 3/4 of its steps (convergence check;
                                                   3/4 of the way through the last phase with last_phase_start)
    <work>/couplings/<train_key>.npz               reflow couplings

**Convergence check.** A model row is trained with a checkpoint at 3/4 of its steps, or with the train
option ``last_phase_start`` at 3/4 of the way through its last phase (the last two checkpoints are that
one and the final one), and that checkpoint is evaluated with the row's own
options; its metrics are kept in the record under ``leaderboard.convergence`` (``step``,
``metrics``), so the tables can mark a row whose metric moved by more than twice the spread of a run in the last
quarter of training as under-trained (``harness.leaderboard.render``). Data and chance rows are
not checked (nothing is optimised).

The unit of work is one (row, seed); it is resumable: a record is kept when its ``eval_key`` (the
content hash of training + evaluation options) matches and the model it evaluated is in this work
folder, and a checkpoint whose ``train_key`` matches is reused. So an interrupted run continues
where it stopped and a changed row reruns only what changed, while on a fresh clone (records
committed, no checkpoints) the suite is reproduced from scratch and its records rewritten.
``--from-results`` is the way to rebuild tables from the committed records. Records are written
atomically.

**Committed records change only when a result does.** A rerun whose record reproduces the stored
one (:func:`reproduces`: the same eval key, every metric value within :data:`REPRODUCED_RTOL`
relative, the same protocol) keeps the stored file, and its sample file, byte for byte; what only
describes the run (wall times, throughput, dates, run id, host, checkpoint paths and file hashes)
is not compared, and files of the work folder are compared by name (their content key). So the
README's main job leaves a clean checkout. ``rewrite=True``
(``--rewrite-records``) writes every record anew.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from harness.core.atomic import atomic_open, write_json
from harness.leaderboard.suite import LeaderboardSuite, Row, content_key

__all__ = ["difference", "record_path", "reproduces", "run_suite", "train_keys"]

GRID_SAMPLES = 64
SCATTER_SAMPLES = 2000  # rows kept for the sample figures of tabular (2-D) data


def record_path(results_dir: Path, suite: str, row: str, seed: int) -> Path:
    return Path(results_dir) / suite / row / f"seed{seed}.json"


REPRODUCED_RTOL = 1e-9
"""Relative tolerance (plus 1e-12 absolute) within which a rerun's numbers reproduce a stored record's:
float reductions differ at ~1e-13 between thread counts, far below any metric's uncertainty."""

_RUN_DESCRIPTION = frozenset({"wall_time_s", "created_utc", "checkpoint_sha256", "weights_sha256", "samples_per_s",
                              "torch_threads"})
"""Fields, at any depth, that describe the run rather than its result (``weights_sha256`` differs when
float reductions do, and ``torch_threads`` with the executor; the metrics decide)."""
_RUN_PATHS = (("run", "id"), ("run", "git_sha"), ("run", "host"), ("run", "distributed"))
_WORK_FILES = (("config", "checkpoint"), ("model", "checkpoint"), ("model", "config", "couplings"),
               ("model", "config", "teacher_checkpoint"))
"""Files in the work folder, named by content key: compared by file name, not by where the folder is."""


def _timing_keys() -> frozenset[str]:
    from metrics import all_metrics

    return frozenset(k.key for m in all_metrics() for k in m.keys if k.gate == "none" and k.gate_reason == "timing")


def _result_part(record: Any, timing: frozenset[str], path: tuple[str, ...] = ()) -> Any:
    """``record`` without what only describes the run (:data:`_RUN_DESCRIPTION`, :data:`_RUN_PATHS`, timing metrics)."""
    if isinstance(record, dict):
        metrics = path[-1:] == ("metrics",)
        return {k: _result_part(v, timing, (*path, k)) for k, v in record.items()
                if k not in _RUN_DESCRIPTION and (*path, k) not in _RUN_PATHS and not (metrics and k in timing)}
    if path in _WORK_FILES and isinstance(record, str):
        return Path(record).name
    if isinstance(record, list):
        return [_result_part(v, timing, path) for v in record]
    return record


def _difference(a: Any, b: Any, path: str = "") -> str | None:
    """The first place where ``a`` and ``b`` differ (``/key[index]`` form), or None when they agree."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{path}/{{{','.join(sorted(a.keys() ^ b.keys()))}}} (present in one only)"
        return next((d for k in a if (d := _difference(a[k], b[k], f"{path}/{k}")) is not None), None)
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path} (length {len(a)} vs {len(b)})"
        return next((d for i, (x, y) in enumerate(zip(a, b)) if (d := _difference(x, y, f"{path}[{i}]")) is not None),
                    None)
    if isinstance(a, float) and isinstance(b, float):
        same = a == b or abs(a - b) <= 1e-12 + REPRODUCED_RTOL * max(abs(a), abs(b))
    else:
        same = type(a) is type(b) and a == b
    return None if same else f"{path}: {a!r:.60} vs {b!r:.60}"


def difference(stored: dict[str, Any], new: dict[str, Any]) -> str | None:
    """Where ``new`` fails to reproduce ``stored`` (see :func:`reproduces`), or None when it does."""
    timing = _timing_keys()
    as_written = json.loads(json.dumps(new, allow_nan=False))  # tuples -> lists, as the stored file has them
    return _difference(_result_part(stored, timing), _result_part(as_written, timing))


def reproduces(stored: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether ``new`` reproduces ``stored``: equal apart from what describes the run, numbers within
    :data:`REPRODUCED_RTOL`."""
    return difference(stored, new) is None


def _stored(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _checkpoint(work: Path, key: str) -> Path:
    return work / "checkpoints" / f"{key}.pt"


def train_keys(suite: LeaderboardSuite, seed: int) -> dict[str, str]:
    """Every row's train key at ``seed`` (rows depend only on earlier rows)."""
    keys: dict[str, str] = {}
    for row in suite.rows:
        keys[row.id] = row.train_key(seed, keys)
    return keys


def _eval_key(row: Row, train_key: str, seed: int) -> str:
    return content_key({"train_key": train_key, "eval": row.eval, "dataset": row.eval_dataset, "seed": seed})


def _train_row(suite: LeaderboardSuite, row: Row, seed: int, keys: dict[str, str], work: Path, device: str,
               progress: bool) -> dict[str, Any]:
    """Train (or reuse) the model of ``row`` at ``seed``, and first the rows it starts from; returns the summary."""
    from harness.checkpoint import load_checkpoint
    from harness.core.heartbeat import log_lines
    from harness.models import build_registered
    from harness.train import TrainConfig, train

    key = keys[row.id]
    ckpt = _checkpoint(work, key)
    summary_path = ckpt.with_suffix(".json")
    if ckpt.is_file() and summary_path.is_file():
        return json.loads(summary_path.read_text())
    for dep in row.upstream:  # its record may exist while its checkpoint does not (a fresh clone)
        _train_row(suite, suite.row(dep), seed, keys, work, device, progress)
    config = dict(row.model_args)
    if row.reflow is not None:
        from baselines.flow_matching import reflow_couplings, save_couplings

        source = _load_trained(_checkpoint(work, keys[row.reflow["from"]]), device)
        z0, z1 = reflow_couplings(source, int(row.reflow["pairs"]), seed, steps=row.reflow["steps"],
                                  sampler=row.reflow["sampler"])
        (work / "couplings").mkdir(parents=True, exist_ok=True)
        pairs = save_couplings(work / "couplings" / f"{key}.npz", z0.cpu(), z1.cpu())
        config["couplings"] = str(pairs)
    if row.teacher is not None:
        config["teacher_checkpoint"] = str(_checkpoint(work, keys[row.teacher]))
    build: Callable[[], Any] | None = None
    if row.init is not None:
        init = load_checkpoint(_checkpoint(work, keys[row.init]))

        def build() -> Any:
            model = build_registered(row.model, config)
            try:
                model.load_state_dict(init.state_dict, strict=True)
            except RuntimeError as err:
                raise ValueError(f"row {row.id}: init from row {row.init} ({init.model_name}) does not fit "
                                 f"{row.model} with {config}: {err}") from None
            return model

    steps = row.train.get("steps")
    start = row.train.get("last_phase_start", 0)  # the last two checkpoints: 3/4 of the way through the last phase, the end
    earlier = (start + (steps - start) * 3 // 4) if (row.role == "model" and steps and steps - start >= 4) else 0
    cfg = TrainConfig(model=row.model, dataset=row.train_dataset, out=str(ckpt), steps=steps,
                      batch_size=row.train.get("batch_size"), num_train=row.train.get("num_train"), seed=seed, device=device,
                      checkpoint_every=earlier)
    result = train(cfg, build=build, model_config=config, progress=progress, heartbeat=log_lines())
    summary = {"train_key": key, "steps": result["steps"], "wall_time_s": round(result["wall_time_s"], 2),
               "last_losses": result["last_losses"], "checkpoint_sha256": result["sha256"],
               "weights_sha256": result["weights_sha256"], "init": row.init,
               "reflow": row.reflow, "options": row.train, "dataset": row.train_dataset, "model_args": row.model_args,
               "device": device, "torch_threads": result["torch_threads"], "convergence_step": earlier or None,
               **({"teacher": row.teacher} if row.teacher else {})}
    write_json(summary_path, summary)
    return summary


def _load_trained(path: Path, device: str) -> Any:
    from harness.runner import ModelEvalConfig, load_model

    return load_model(ModelEvalConfig(dataset="-", checkpoint=str(path), device=device)).model


def _earlier_checkpoint(work: Path, key: str, step: int | None) -> Path | None:
    """The checkpoint of the convergence check (3/4 of the steps), when training wrote one."""
    path = _checkpoint(work, key).with_name(f"{key}.step{step}.pt") if step else None
    return path if path is not None and path.is_file() else None


def _save_samples(path: Path, samples: Any) -> None:
    buf = io.BytesIO()
    x = np.asarray(samples)
    np.savez_compressed(buf, samples=x[:SCATTER_SAMPLES] if x.ndim == 2 else x[:GRID_SAMPLES])
    with atomic_open(path) as handle:
        handle.write(buf.getvalue())


def _run_unit(suite: LeaderboardSuite, row: Row, seed: int, *, results_dir: Path, work: Path, device: str,
              progress: bool, rewrite: bool) -> tuple[Path, str]:
    """Train (or reuse) and evaluate one (row, seed); returns the record path and what happened.

    Under torchrun rank 0 trains while the others wait, every rank evaluates its share
    (``harness.core.distributed``), and rank 0 writes.
    """
    from harness.core.distributed import finished_here_writes, gather_objects, world
    from harness.runner import ModelEvalConfig, evaluate_model

    keys = train_keys(suite, seed)
    path = record_path(results_dir, suite.name, row.id, seed)
    ekey = _eval_key(row, keys[row.id], seed)
    ckpt = _checkpoint(work, keys[row.id])
    if path.is_file() and ckpt.is_file():
        try:
            if json.loads(path.read_text())["leaderboard"]["eval_key"] == ekey:
                return path, "done (its record and checkpoint exist)"
        except (KeyError, ValueError):
            pass  # an unreadable or foreign record is redone
    summary = _train_row(suite, row, seed, keys, work, device, progress) if world().is_main else None
    summary = gather_objects(summary)[0]  # the other ranks wait for rank 0's checkpoint (a shared work folder)
    cfg = ModelEvalConfig.from_dict({**row.eval, "dataset": row.eval_dataset, "seed": seed, "device": device,
                                     "checkpoint": str(ckpt)})
    kept: list[Any] = []
    record = evaluate_model(cfg, progress=progress, argv=["genbench", "leaderboard", "--suite", suite.name],
                            on_samples=kept.append if seed == row.seeds[0] else None)
    record["leaderboard"] = {"suite": suite.name, "row": row.id, "label": row.label, "seed": seed,
                             "train_key": keys[row.id], "eval_key": ekey, "train": summary}
    earlier_ckpt = _earlier_checkpoint(work, keys[row.id], summary.get("convergence_step"))
    if earlier_ckpt is not None:
        earlier = evaluate_model(ModelEvalConfig.from_dict({**row.eval, "dataset": row.eval_dataset, "seed": seed,
                                                            "device": device, "checkpoint": str(earlier_ckpt)}),
                                 progress=progress, argv=["genbench", "leaderboard", "--suite", suite.name])
        record["leaderboard"]["convergence"] = {"step": summary["convergence_step"], "metrics": earlier["metrics"]}
    samples_path = path.with_name(f"seed{seed}.samples.npz")
    stored = None if rewrite else _stored(path)
    keep = stored is not None and reproduces(stored, record) and (not kept or samples_path.is_file())
    if not keep and finished_here_writes():
        if kept:
            _save_samples(samples_path, kept[0].numpy())
        write_json(path, record)
    return path, "reproduces the stored record, kept" if keep else "written"


def one_torch_thread() -> None:
    """Process-pool initializer: one torch thread per job, so N jobs share N cores without contention."""
    import torch

    torch.set_num_threads(1)


def _train_job(suite: LeaderboardSuite, row_id: str, seed: int, work: str, device: str, threads: int | None) -> str:
    """A worker's training task (picklable: module level, plain arguments)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    _train_row(suite, suite.row(row_id), seed, train_keys(suite, seed), Path(work), device, False)
    return row_id


def _unit_job(suite: LeaderboardSuite, row_id: str, seed: int, results_dir: str, work: str, device: str, rewrite: bool,
              threads: int | None) -> tuple[str, str, float]:
    """A worker's (row, seed): returns (record path, what happened, seconds)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    path, what = _run_unit(suite, suite.row(row_id), seed, results_dir=Path(results_dir), work=Path(work),
                           device=device, progress=False, rewrite=rewrite)
    return str(path), what, time.perf_counter() - t0


def _depth(suite: LeaderboardSuite, row_id: str) -> int:
    """0 for a row that starts from nothing, else one more than the deepest row it starts from."""
    row = suite.row(row_id)
    return 0 if not row.upstream else 1 + max(_depth(suite, dep) for dep in row.upstream)


def _closure(suite: LeaderboardSuite, row_id: str) -> set[str]:
    """The rows ``row_id`` starts from, directly or through others."""
    out: set[str] = set()
    for dep in suite.row(row_id).upstream:
        out |= {dep, *_closure(suite, dep)}
    return out


def _run_with_executor(suite: LeaderboardSuite, units: list[tuple[Row, int]], executor: Any, *, results_dir: Path,
                       work: Path, device: str, rewrite: bool, threads: int | None,
                       log: Callable[[str], None]) -> list[Path]:
    """Dispatch the units to ``executor`` (anything with ``submit(fn, *args)`` returning an object with
    ``result()``: ``concurrent.futures`` pools, submitit executors), level by level: first each
    distinct model of a level is trained once, then its units are evaluated, so no two jobs train
    the same checkpoint and a row's upstream models exist before it starts."""
    start = time.perf_counter()
    results_dir, work = Path(results_dir).resolve(), Path(work).resolve()  # a job may start in another folder
    wanted = {(row.id, seed) for row, seed in units}
    needed = set(wanted) | {(dep, seed) for row, seed in units for dep in _closure(suite, row.id)}
    done: dict[tuple[str, int], Path] = {}
    for level in sorted({_depth(suite, r) for r, _ in needed}):
        at_level = sorted(u for u in needed if _depth(suite, u[0]) == level)
        distinct: dict[str, tuple[str, int]] = {}
        for row_id, seed in at_level:
            distinct.setdefault(train_keys(suite, seed)[row_id], (row_id, seed))
        trains = [executor.submit(_train_job, suite, row_id, seed, str(work), device, threads)
                  for row_id, seed in distinct.values() if not _checkpoint(work, train_keys(suite, seed)[row_id]).is_file()]
        for job in trains:
            job.result()
        evals = {u: executor.submit(_unit_job, suite, u[0], u[1], str(results_dir), str(work), device, rewrite, threads)
                 for u in at_level if u in wanted}
        for (row_id, seed), job in evals.items():
            path, what, seconds = job.result()
            done[(row_id, seed)] = Path(path)
            log(f"[{len(done)}/{len(wanted)}] {suite.name}/{row_id} seed {seed}: {seconds:.1f} s "
                f"(suite {time.perf_counter() - start:.0f} s); {what}")
    return [done[(row.id, seed)] for row, seed in units]


def run_suite(
    suite: LeaderboardSuite,
    *,
    results_dir: Path,
    work_dir: Path,
    device: str = "auto",
    only_rows: tuple[str, ...] = (),
    progress: bool = True,
    rewrite: bool = False,
    log: Callable[[str], None] = print,
    executor: Any = None,
    threads: int | None = None,
) -> list[Path]:
    """Train and evaluate every (row, seed) of ``suite`` not already done; returns the record paths.

    A stored record that the rerun reproduces is kept as it is, unless ``rewrite``. ``executor``:
    None runs the units one after another in this process; otherwise each (row, seed) is a job of
    the executor (:func:`_run_with_executor`), with ``threads`` torch threads (None: the worker's default).
    """
    from harness.core.device import check_device

    device = check_device(device)
    unknown = [r for r in only_rows if r not in {row.id for row in suite.rows}]
    if unknown:
        raise ValueError(f"suite {suite.name} has no row(s) {unknown}; rows: {[r.id for r in suite.rows]}")
    wanted = set(only_rows) if only_rows else {r.id for r in suite.rows}  # rows they start from are trained, not evaluated
    work = Path(work_dir)
    units = [(row, seed) for row in suite.rows if row.id in wanted for seed in row.seeds]
    if executor is not None:
        return _run_with_executor(suite, units, executor, results_dir=results_dir, work=work, device=device,
                                  rewrite=rewrite, threads=threads, log=log)
    written: list[Path] = []
    start = time.perf_counter()
    for i, (row, seed) in enumerate(units, 1):
        t0 = time.perf_counter()
        path, what = _run_unit(suite, row, seed, results_dir=results_dir, work=work, device=device, progress=progress,
                               rewrite=rewrite)
        written.append(path)
        if what.startswith("done"):
            continue
        log(f"[{i}/{len(units)}] {suite.name}/{row.id} seed {seed}: {time.perf_counter() - t0:.1f} s "
            f"(suite {time.perf_counter() - start:.0f} s){'; ' + what if what.startswith('reproduces') else ''}")
    return written
