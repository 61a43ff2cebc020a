"""Statistics of the cached runs: means over seeds, MemVir − baseline with its Welch standard
error, the comparisons and ablations found, and the protocol audit.

Records (see ``runner.run_one``) hold ``test`` (the checkpoint chosen on validation) and, from
issue 12 on, ``test_curve`` (test metrics at every validated epoch). Values are in %.
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


def comparisons(groups: dict[tuple, list[dict]], ablation: str = "") -> list[Comparison]:
    """Per loss at every epoch budget E run: equal epochs (E vs E) and MemVir trained twice as
    long (2E vs E: the paper's setting of a longer MemVir run, at our budget ratio). The
    budget-matched control (both at 2E) is the equal-epoch row of 2E. ``ablation``: pair the
    runs of that ablation (both arms, e.g. ``const``) instead of the plain runs."""
    found = []
    for loss in sorted({k[0] for k in groups}):
        budgets = sorted({k[3] for k in groups if k[0] == loss and k[2] == ablation})
        pairs = [(f"equal epochs (E={e})", e, e) for e in budgets]
        pairs += [(f"MemVir 2x longer (E={2 * e} vs {e})", 2 * e, e) for e in budgets]
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
    """The records with a per-epoch test curve (runs before issue 12 have none)."""
    return [r for r in records if r.get("test_curve")]


def protocol_gain(records: Sequence[dict], metric: str) -> tuple[float, float]:
    """Mean and std over runs of (b) − (a): what picking the best test epoch adds to one run."""
    return mean_std([best_test(r, metric) - selected_test(r, metric) for r in records])


class Decomposition(NamedTuple):
    """MemVir − baseline of one loss and metric, from our setting to the paper's, in points.

    ``ours`` (protocol (a), equal epochs E) + ``budget`` (MemVir at 2E instead of E, still (a))
    + ``protocol`` (the best test epoch (b) instead of (a), at 2E vs E) = ``official``.
    """

    ours: float
    budget: float
    protocol: float
    official: float


def decompose(groups: dict[tuple, list[dict]], loss: str, epochs: int, metric: str) -> Decomposition | None:
    """The :class:`Decomposition` of ``loss`` at budget E=``epochs`` (None unless the baseline
    at E and MemVir at E and 2E all have runs)."""
    base, mem, mem_long = (groups.get((loss, m, "", e)) for m, e in ((False, epochs), (True, epochs),
                                                                    (True, 2 * epochs)))
    if not (base and mem and mem_long):
        return None

    def delta(protocol: Callable[[dict, str], float], memvir: list[dict]) -> float:
        return difference(test_values(memvir, metric, protocol), test_values(base, metric, protocol))[0]

    ours, long_a, long_b = delta(selected_test, mem), delta(selected_test, mem_long), delta(best_test, mem_long)
    return Decomposition(ours, long_a - ours, long_b - long_a, long_b)
