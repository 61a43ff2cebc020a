"""Statistics of the cached runs: means over seeds, MemVir − baseline with its Welch standard
error, the comparisons and ablations found, and the protocol audit.

Records (see ``runner.run_one``) hold ``test`` (the checkpoint chosen on validation) and, where
the run logged it, ``test_curve`` (test metrics at every validated epoch). Values are in %.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import NamedTuple

from quality_bench.regimes import BOTH_ARMS


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (ddof 1; NaN for one value)."""
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else math.nan


def difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """mean(a) − mean(b) and its Welch standard error sqrt(s_a²/n_a + s_b²/n_b) (NaN unless
    both have ≥ 2 values)."""
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    return ma - mb, math.sqrt(sa**2 / len(a) + sb**2 / len(b))


def selected_test(record: dict, metric: str) -> float:
    """Our protocol: test ``metric`` (%) of the checkpoint of the epoch chosen on validation."""
    return 100 * record["test"][f"test/{metric}"]


def best_test(record: dict, metric: str) -> float:
    """The official code's protocol: the best test ``metric`` (%) over every evaluated epoch,
    for each metric on its own (different metrics may come from different epochs)."""
    return 100 * max(row[f"test/{metric}"] for row in record["test_curve"])


#: protocol name -> the value of one run under it
PROTOCOLS: dict[str, Callable[[dict, str], float]] = {
    "(a) epoch chosen on val": selected_test,
    "(b) best test epoch": best_test,
}


def test_values(records: Sequence[dict], metric: str, protocol: Callable[[dict, str], float] = selected_test
                ) -> list[float]:
    """``metric`` (%) of each record under ``protocol`` (default: ours)."""
    return [protocol(r, metric) for r in records]


def group(records: Sequence[dict]) -> dict[tuple, list[dict]]:
    """Records by (loss, memvir, ablation, epochs), seeds together."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["loss"], r["memvir"], r["ablation"], r["epochs"]), []).append(r)
    return groups


class Comparison(NamedTuple):
    """MemVir runs at ``memvir_epochs`` against baseline runs at ``baseline_epochs``."""

    loss: str
    label: str
    memvir: list[dict]
    baseline: list[dict]
    memvir_epochs: int
    baseline_epochs: int


def comparisons(groups: dict[tuple, list[dict]], ablation: str = "", long_factor: int = 2) -> list[Comparison]:
    """Per loss at every epoch budget E run: equal epochs (E vs E) and MemVir trained
    ``long_factor`` times as long (kE vs E: the paper's setting of a longer MemVir run, at the
    regime's budget ratio). The budget-matched control (both at kE) is the equal-epoch row of
    kE. ``ablation``: pair the runs of that ablation (both arms, e.g. ``const``) instead of the
    plain runs."""
    found = []
    for loss in sorted({k[0] for k in groups}):
        budgets = sorted({k[3] for k in groups if k[0] == loss and k[2] == ablation})
        pairs = [(f"equal epochs (E={e})", e, e) for e in budgets]
        pairs += [(f"MemVir {long_factor}x longer (E={long_factor * e} vs {e})", long_factor * e, e)
                  for e in budgets]
        for label, e_mem, e_base in pairs:
            mem, base = groups.get((loss, True, ablation, e_mem)), groups.get((loss, False, ablation, e_base))
            if mem and base:
                found.append(Comparison(loss, label, mem, base, e_mem, e_base))
    return found


def baseline_of(ablation: str, ablation_baseline: str = "") -> str:
    """The baseline ablation a MemVir ``ablation`` is compared with: its own where it changes
    both arms (:data:`BOTH_ARMS`), else the regime's ``ablation_baseline`` ("" = plain)."""
    return ablation if ablation in BOTH_ARMS else ablation_baseline


class AblationComparison(NamedTuple):
    """One MemVir ablation's runs with its references, restricted to its seeds and epochs."""

    loss: str
    ablation: str
    runs: list[dict]
    memvir: list[dict]
    baseline: list[dict]
    baseline_name: str  # the baseline's ablation ("" = the plain baseline), see baseline_of


def ablations_vs_baseline(groups: dict[tuple, list[dict]], ablation_baseline: str = ""
                          ) -> list[AblationComparison]:
    """Every MemVir ablation with the default-MemVir runs and the baseline runs of
    :func:`baseline_of` (the regime's :attr:`~quality_bench.regimes.Regime.ablation_baseline`)
    at the same epochs and seeds."""
    found = []
    for (loss, memvir_arm, ablation, e), rs in sorted(groups.items()):
        if not ablation or not memvir_arm:
            continue
        seeds = {r["seed"] for r in rs}
        which = baseline_of(ablation, ablation_baseline)
        mem, base = ([x for x in groups.get((loss, memvir, ref, e), []) if x["seed"] in seeds]
                     for memvir, ref in ((True, ""), (False, which)))
        found.append(AblationComparison(loss, ablation, rs, mem, base, which))
    return found


# ---------------------------------------------------------------------------- protocol audit
def audited(records: Sequence[dict]) -> list[dict]:
    """The records with a per-epoch test curve (the earliest runs have none)."""
    return [r for r in records if r.get("test_curve")]


def protocol_gain(records: Sequence[dict], metric: str) -> tuple[float, float]:
    """Mean and std over runs of (b) − (a): what picking the best test epoch adds to one run."""
    return mean_std([best_test(r, metric) - selected_test(r, metric) for r in records])


class Decomposition(NamedTuple):
    """MemVir − baseline of one loss and metric, from our setting to the paper's, in points.

    ``ours`` (protocol (a), equal epochs E) + ``budget`` (MemVir at kE instead of E, still (a))
    + ``protocol`` (the best test epoch (b) instead of (a), at kE vs E) = ``official``.
    """

    ours: float
    budget: float
    protocol: float
    official: float


def decompose(groups: dict[tuple, list[dict]], loss: str, epochs: int, metric: str,
              long_factor: int = 2) -> Decomposition | None:
    """The :class:`Decomposition` of ``loss`` at budget E=``epochs`` (None unless the baseline
    at E and MemVir at E and kE = ``long_factor`` x E all have runs)."""
    base, mem, mem_long = (groups.get((loss, m, "", e)) for m, e in ((False, epochs), (True, epochs),
                                                                    (True, long_factor * epochs)))
    if not (base and mem and mem_long):
        return None

    def delta(protocol: Callable[[dict, str], float], memvir: list[dict]) -> float:
        return difference(test_values(memvir, metric, protocol), test_values(base, metric, protocol))[0]

    ours, long_a, long_b = delta(selected_test, mem), delta(selected_test, mem_long), delta(best_test, mem_long)
    return Decomposition(ours, long_a - ours, long_b - long_a, long_b)


# ---------------------------------------------------------------------------- settings sweep
def best_val(record: dict, key: str = "val/map@r") -> float:
    """The best validation ``key`` (%) of a run over its validated epochs (NaN if none logs it)."""
    return 100 * max((row[key] for row in record["val_curve"] if key in row), default=math.nan)


class SettingScore(NamedTuple):
    """A swept setting's validation score on the sweep's seeds (the seeds every setting has)."""

    loss: str
    setting: str
    budget: int  # the runs' epochs
    seeds: tuple[int, ...]
    val_map_r: tuple[float, float]  # mean, std over seeds, of the selected epoch's val MAP@R (%)
    val_recall_1: tuple[float, float]
    selected: tuple[int, ...]  # the selected epoch of each seed

    @property
    def run_key(self) -> str:
        """``loss/setting/epochs``: the runs this score stands for (see :func:`run_key`)."""
        return f"{self.loss}/{self.setting}/{self.budget}"


def sweep_scores(groups: dict[tuple, list[dict]], is_setting: Callable[[str], bool]) -> list[SettingScore]:
    """Every swept setting (MemVir ablations that ``is_setting``) of each loss, part and budget,
    scored on validation only, on the seeds that all settings of that loss, part and budget have."""
    by_part: dict[tuple[str, str, int], dict[str, list[dict]]] = {}
    for (loss, memvir, ablation, epochs), rs in groups.items():
        if memvir and is_setting(ablation):
            by_part.setdefault((loss, ablation.split("-")[0], epochs), {})[ablation] = rs
    scores = []
    for (loss, _, budget), settings in sorted(by_part.items()):
        shared = set.intersection(*({r["seed"] for r in rs} for rs in settings.values()))
        for setting, rs in sorted(settings.items()):
            runs = sorted((r for r in rs if r["seed"] in shared), key=lambda r: r["seed"])
            if runs:
                scores.append(SettingScore(
                    loss, setting, budget, tuple(r["seed"] for r in runs),
                    mean_std([100 * r["best"]["val/map@r"] for r in runs]),
                    mean_std([100 * r["best"]["val/recall@1"] for r in runs]),
                    tuple(int(r["best"]["epoch"]) for r in runs)))
    return scores


def chosen_settings(scores: Sequence[SettingScore]) -> set[str]:
    """Per loss, part and budget, the :attr:`~SettingScore.run_key` of the setting of the highest
    mean validation MAP@R."""
    best: dict[tuple[str, str, int], SettingScore] = {}
    for s in scores:
        key = (s.loss, s.setting.split("-")[0], s.budget)
        if key not in best or s.val_map_r[0] > best[key].val_map_r[0]:
            best[key] = s
    return {s.run_key for s in best.values()}


def run_key(record: dict) -> str:
    """``loss/ablation/epochs`` of a record, as :attr:`SettingScore.run_key`."""
    return f"{record['loss']}/{record['ablation']}/{record['epochs']}"


# ---------------------------------------------------------------------------- better, or sooner?
def epochs_to_reach(record: dict, target: float, key: str = "val/map@r") -> int | None:
    """The first validated epoch whose ``key`` (%) is at least ``target`` (None if never)."""
    return next((row["epoch"] for row in record["val_curve"] if 100 * row.get(key, -math.inf) >= target), None)


def fit_minutes(record: dict, epoch: int) -> float:
    """Minutes a run spent fitting up to the end of ``epoch``: its :class:`~quality_bench.clock.EpochClock`
    reading, or, for a run without one, its whole time pro rata of its epochs."""
    clock = {row["epoch"]: row["seconds"] for row in record.get("epoch_seconds", [])}
    return (clock[epoch] if epoch in clock else record["seconds"] * epoch / record["epochs"]) / 60


class TimeToTarget(NamedTuple):
    """How soon the runs of one arm reach a validation target."""

    reached: int  # runs that reached it
    runs: int
    epochs: tuple[float, float]  # mean, std over the runs that reached it
    minutes: tuple[float, float]  # fitting minutes to that epoch (:func:`fit_minutes`)


def time_to_target(records: Sequence[dict], target: float, key: str = "val/map@r") -> TimeToTarget:
    """Epochs and fitting minutes each run needs to reach ``target``."""
    hits = [(epoch, fit_minutes(r, epoch)) for r in records
            if (epoch := epochs_to_reach(r, target, key)) is not None]
    nan = (math.nan, math.nan)
    return TimeToTarget(len(hits), len(records), mean_std([h[0] for h in hits]) if hits else nan,
                        mean_std([h[1] for h in hits]) if hits else nan)
