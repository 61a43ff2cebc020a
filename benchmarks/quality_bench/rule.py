"""The recommendation rule over regimes, and its one-table summary.

Virtual proxies (a MemVir part) are recommended if, and only if, for every loss the rule names,
their Δ R@1 and Δ MAP@R against the baseline trained at the same learning rate and for the
same budget are ≥ 0 in the mean over the regimes, with no regime below 0 by more than 2 SE.

Per regime the comparison is at its equal budget E: the baseline is its ``ablation_baseline``
(e.g. ``const``: MemVir's constant lr) where it has one, else the plain baseline (both arms
already share the schedule); each arm is the MemVir runs of one part (full MemVir: the plain
MemVir runs; a part: its ablation, the setting chosen on validation where N and M were swept),
on the seeds the arm and the baseline share.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from quality_bench import stats
from quality_bench.regimes import LABELS, REGIMES, Regime, is_setting
from quality_bench.runner import load_records

#: arm label -> the MemVir part of its runs ("" = full MemVir, the plain runs)
ARMS = {"MemVir": "", "virtual proxies": "virtual_proxies", "virtual proxies masked": "virtual_proxies_masked"}
#: the losses the rule must hold for
RULE_LOSSES = ("norm_softmax", "proxy_anchor")
#: the metrics the rule reads
RULE_METRICS = ("recall@1", "map@r")


class Cell(NamedTuple):
    """One arm of one regime and loss against its baseline: Δ (points) ± Welch SE per metric."""

    seeds: int
    baseline: float  # the baseline's mean test R@1 on those seeds (%)
    arm: float  # the arm's mean test R@1 (%)
    deltas: dict[str, tuple[float, float]]  # metric -> (Δ, SE)


def _part(ablation: str) -> str | None:
    """The MemVir part a run's ablation trains ("" = full MemVir), or None for other ablations."""
    if not ablation:
        return ""
    name = ablation.split("-")[0] if is_setting(ablation) else ablation
    return name if name in ARMS.values() else None


def regime_cells(regime: Regime, records: Sequence[dict]) -> dict[str, dict[str, Cell]]:
    """loss -> arm label -> :class:`Cell` for the arms a regime's cached ``records`` have at E."""
    scores = stats.sweep_scores(stats.group(records), is_setting)
    chosen = stats.chosen_settings(scores)
    records = [r for r in records if not is_setting(r["ablation"]) or stats.run_key(r) in chosen]
    groups = stats.group(records)
    e = regime.epochs
    cells: dict[str, dict[str, Cell]] = {}
    for loss in sorted({k[0] for k in groups}):
        baseline = groups.get((loss, False, regime.ablation_baseline, e)) or []
        if not baseline:
            continue
        for label, part in ARMS.items():
            arm = [r for (lo, memvir, ablation, epochs), rs in groups.items()
                   if lo == loss and memvir and epochs == e and _part(ablation) == part for r in rs]
            seeds = {r["seed"] for r in arm} & {r["seed"] for r in baseline}
            if not seeds:
                continue
            a = [r for r in arm if r["seed"] in seeds]
            b = [r for r in baseline if r["seed"] in seeds]
            deltas = {m: stats.difference(stats.test_values(a, m), stats.test_values(b, m)) for m in RULE_METRICS}
            cells.setdefault(loss, {})[label] = Cell(
                len(seeds), statistics.fmean(stats.test_values(b, "recall@1")),
                statistics.fmean(stats.test_values(a, "recall@1")), deltas)
    return cells


class Verdict(NamedTuple):
    """What the rule says of one arm: ``holds`` (None = not every loss has a regime), per loss the
    mean Δ per metric over the regimes that have the arm, and the regimes below 0 by > 2 SE."""

    holds: bool | None
    means: dict[str, dict[str, float]]  # loss -> metric -> mean Δ over regimes
    failing: list[str]  # "regime loss metric" below 0 by more than 2 SE
    regimes: dict[str, list[str]]  # loss -> the regimes that have the arm


def verdict(cells: dict[str, dict[str, dict[str, Cell]]], arm: str) -> Verdict:
    """The rule for ``arm`` over ``cells`` (regime -> loss -> arm -> Cell)."""
    means: dict[str, dict[str, float]] = {}
    failing: list[str] = []
    regimes: dict[str, list[str]] = {}
    for loss in RULE_LOSSES:
        found = {name: by_loss[loss][arm] for name, by_loss in cells.items() if arm in by_loss.get(loss, {})}
        regimes[loss] = sorted(found)
        if not found:
            continue
        means[loss] = {m: statistics.fmean(c.deltas[m][0] for c in found.values()) for m in RULE_METRICS}
        failing += [f"{name} {LABELS.get(loss, loss)} {m}" for name, c in sorted(found.items()) for m in RULE_METRICS
                    if c.deltas[m][0] < 0 and not math.isnan(c.deltas[m][1]) and -c.deltas[m][0] > 2 * c.deltas[m][1]]
    if any(not regimes[loss] for loss in RULE_LOSSES):
        return Verdict(None, means, failing, regimes)
    holds = not failing and all(v >= 0 for by_metric in means.values() for v in by_metric.values())
    return Verdict(holds, means, failing, regimes)


def _delta(cell: Cell | None, metric: str) -> str:
    if cell is None:
        return "–"
    d, se = cell.deltas[metric]
    return f"{d:+.2f}" + ("" if math.isnan(se) else f" ± {se:.2f}")


def rule_report(regime_names: Sequence[str], runs_dir: Path, path: Path, command: str) -> Path:
    """``path`` (markdown): the one-table summary over ``regime_names`` and the rule's verdict per arm."""
    cells = {name: regime_cells(REGIMES[name], load_records(runs_dir / name)) for name in regime_names
             if name in REGIMES}
    cells = {name: c for name, c in cells.items() if c}
    if not cells:
        raise FileNotFoundError(f"no cached runs with a baseline under {runs_dir} for {list(regime_names)}")
    lines = [
        "# Does a part of MemVir help? One table over regimes", "",
        f"This report: `{command}`.", "",
        "Test metrics (%) at each regime's equal budget E; Δ = arm − baseline trained at the same learning rate"
        " and for as many epochs (the regime's `ablation_baseline` where it has one), ± Welch SE over the seeds both"
        " have; the virtual-proxy settings chosen on validation alone.", "",
        "| regime | loss | E | seeds | baseline R@1 | " + " | ".join(
            f"{arm} Δ R@1 | {arm} Δ MAP@R" for arm in ARMS) + " |",
        "|" + "---|" * (5 + 2 * len(ARMS)),
    ]
    for name, by_loss in cells.items():
        for loss, arms in by_loss.items():
            any_cell = next(iter(arms.values()))
            seeds = "/".join(str(arms[a].seeds) if a in arms else "–" for a in ARMS)
            lines.append(f"| {name} | {LABELS.get(loss, loss)} | {REGIMES[name].epochs} | {seeds} | "
                         f"{any_cell.baseline:.2f} | "
                         + " | ".join(f"{_delta(arms.get(a), 'recall@1')} | {_delta(arms.get(a), 'map@r')}"
                                      for a in ARMS) + " |")
    lines += ["", "## The rule", "",
              "An arm is recommended if, and only if, for both NormSoftmax and ProxyAnchor its Δ R@1 and Δ MAP@R"
              " are ≥ 0 in the mean over the regimes and no regime is below 0 by more than 2 SE.", "",
              "| arm | loss | regimes | mean Δ R@1 | mean Δ MAP@R | below 0 by > 2 SE | the rule says |",
              "|---|---|---|---|---|---|---|"]
    for arm in ARMS:
        v = verdict(cells, arm)
        says = {True: "**yes**", False: "**no**", None: "no verdict (a loss has no regime)"}[v.holds]
        for loss in RULE_LOSSES:
            mean = v.means.get(loss, {})
            failing = [f for f in v.failing if f" {LABELS.get(loss, loss)} " in f]
            lines.append(f"| {arm} | {LABELS.get(loss, loss)} | {', '.join(v.regimes[loss]) or '–'} | "
                         + " | ".join(f"{mean[m]:+.2f}" if m in mean else "–" for m in RULE_METRICS)
                         + f" | {'; '.join(failing) or 'none'} | {says} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path
