"""Running the grid: one run per process call, cached as JSON, shared by workers through lock files.

Each finished run leaves ``<cache>/<run>.json`` (its record: overrides, seconds, the selected
epoch's val metrics, the test metrics of its checkpoint, and the per-epoch val and test curves
read from the run's ``csv/metrics.csv``); runs whose JSON exists are skipped, so the grid can be
run in pieces; a run being trained is claimed by a ``<run>.running`` file (its worker's pid).
Paths in records are relative to the repository when they lie inside it.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from quality_bench.clock import EpochClock, read_clock
from quality_bench.grid import RunSpec
from quality_bench.regimes import TEST_DURING_FIT, ZERO_SHOT, Regime

REPO = Path(__file__).resolve().parents[2]
#: the file a run's EpochClock writes in its run directory
CLOCK_FILE = "epoch_seconds.json"


def repo_relative(path: str | Path) -> str:
    """``path`` relative to the repository if it lies inside it, else absolute (as given)."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else str(path)


def read_curves(run_dir: Path) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """Per validated epoch (1-based): the val metrics, and the test metrics logged by
    SplitEvaluation (renamed ``test/...``), from the run's ``csv/metrics.csv``."""
    val, test = [], []
    prefix = f"{TEST_DURING_FIT}/"
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):  # epoch-end rows carry the epoch (0-based); others may not
            if row.get("val/recall@1"):
                val.append({"epoch": int(row["epoch"]) + 1,
                            **{k: float(v) for k, v in row.items() if k.startswith("val/") and v}})
            if row.get(f"{prefix}recall@1"):
                test.append({"epoch": int(row["epoch"]) + 1, **{"test/" + k.removeprefix(prefix): float(v)
                                                                for k, v in row.items() if k.startswith(prefix) and v}})
    return val, test


def check_steps_per_epoch(cfg: Any, regime: Regime) -> None:
    """Raise if the training split holds fewer full batches than the regime's epoch asks for."""
    import hydra

    if regime.steps_per_epoch is None:
        return
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    batches = len(datamodule.train_dataloader())
    if batches < regime.steps_per_epoch:
        raise ValueError(
            f"the regime's epoch is {regime.steps_per_epoch} steps, but the training split ({cfg.data.get('dataset')}) "
            f"gives only {batches} batches; lower the regime's steps_per_epoch (and rescale its MemVir settings, "
            "see benchmarks/quality_bench/regimes.py) or use a larger training split.")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else :func:`platform.processor`), recorded with each run
    so that its minutes are compared only with runs timed on the same kind of machine."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_overrides(work_dir: Path) -> list[str]:
    """Where a run finds its data and cache, and its thread count: the repository's ``data/``
    (or ``$MEMVIR_DATA``; a run's own folder is its working directory), the grid's shared cache,
    and the worker's ``--threads`` (which the run's ``threads`` key would otherwise reset)."""
    import torch

    return [f"paths.data_dir={os.environ.get('MEMVIR_DATA', REPO / 'data')}",
            f"paths.cache_dir={work_dir.parent / '.cache'}", f"threads={torch.get_num_threads()}"]


def run_one(spec: RunSpec, regime: Regime, work_dir: Path, cache_dir: Path, command: str = "") -> dict[str, Any]:
    """Train and test one run (in this process), or evaluate the zero-shot row; returns and
    caches its record, which keeps the ``command`` that started it."""
    from memvir_pl.config import compose_config

    run_dir = work_dir / spec.name
    shutil.rmtree(run_dir, ignore_errors=True)  # a run killed before it finished starts afresh
    overrides = spec.overrides(regime)
    clock = run_dir / CLOCK_FILE
    timing = [] if spec.loss == ZERO_SHOT else [f"+callbacks.epoch_clock._target_={EpochClock.__module__}.EpochClock",
                                               f"+callbacks.epoch_clock.path={clock}"]
    cfg = compose_config([*overrides, *machine_overrides(work_dir), *timing], run_dir)
    check_steps_per_epoch(cfg, regime)
    start = time.perf_counter()
    if spec.loss == ZERO_SHOT:
        from quality_bench.zero_shot import evaluate_pooled_features

        metrics = evaluate_pooled_features(cfg)
        val_curve, test_curve = [metrics["best"]], [{"epoch": 0, **metrics["test"]}]
    else:
        from memvir_pl.train import train

        metrics = train(cfg)
        val_curve, test_curve = read_curves(run_dir)
    checkpoint = metrics.get("test_checkpoint")
    record = {
        "name": spec.name, "loss": spec.loss, "memvir": spec.memvir, "epochs": spec.epochs,
        "seed": spec.seed, "ablation": spec.ablation, "overrides": overrides,
        "seconds": round(time.perf_counter() - start, 1), "best": metrics["best"],
        "test": metrics["test"],
        "test_checkpoint": repo_relative(checkpoint) if checkpoint and checkpoint != "final weights" else checkpoint,
        "val_curve": val_curve, "test_curve": test_curve, "epoch_seconds": read_clock(clock),
        "run_dir": repo_relative(run_dir), "command": command, "cpu": cpu_model(),
    }
    cache_dir.mkdir(parents=True, exist_ok=True)
    (cache_dir / f"{spec.name}.json").write_text(json.dumps(record, indent=1))
    return record


def claim(lock: Path) -> bool:
    """Take a run for this process (a ``.running`` file holding its pid); False when a live
    process holds it. Several workers started with the same arguments share the grid this way."""
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        pid = lock.read_text().strip()
        if not pid.isdigit():  # being written by the worker that just created it
            return False
        try:
            os.kill(int(pid), 0)
            return False
        except ProcessLookupError:  # its worker died: take the run over
            lock.unlink(missing_ok=True)
            return claim(lock)
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    return True


def run_grid(label: str, specs: Sequence[RunSpec], regime: Regime, work_dir: Path, cache_dir: Path,
             command: str) -> None:
    """Run every spec not cached yet and not claimed by another live worker."""
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir.parent / ".gitignore").write_text("*\n")  # checkpoints: never committed
    cache_dir.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        if spec.same_as:
            record_same_as(spec, cache_dir, command)
            continue
        lock = cache_dir / f"{spec.name}.running"
        if (cache_dir / f"{spec.name}.json").exists() or not claim(lock):
            continue
        print(f"[quality] {label}/{spec.name}", flush=True)
        try:
            run_one(spec, regime, work_dir, cache_dir, command)
        finally:
            lock.unlink(missing_ok=True)


def record_same_as(spec: RunSpec, cache_dir: Path, command: str) -> None:
    """Record an ablation run that would repeat its plain run (``spec.same_as``) as that run's
    results under the ablation's name, once the plain run is cached (later otherwise)."""
    source, target = cache_dir / f"{spec.same_as}.json", cache_dir / f"{spec.name}.json"
    if target.exists():
        return
    if not source.exists():
        print(f"[quality] {spec.name}: the same configuration as {spec.same_as}, which is not cached yet; "
              "recorded once it is (run this command again)", flush=True)
        return
    record = json.loads(source.read_text())
    record.update(name=spec.name, ablation=spec.ablation, same_as=spec.same_as, command=command)
    target.write_text(json.dumps(record, indent=1))
    print(f"[quality] {spec.name}: the same configuration as {spec.same_as}; its results recorded", flush=True)


def load_records(cache_dir: Path) -> list[dict]:
    """Every cached record of a regime, by file name."""
    return [json.loads(p.read_text()) for p in sorted(cache_dir.glob("*.json"))]
