"""Reports of the cached runs: ``quality_<regime>.md`` (tables and the protocol audit), the
validation-curve plot per regime and the summary figure over regimes."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from quality_bench import stats
from quality_bench.regimes import (
    AUDIT_METRICS,
    BOTH_ARMS,
    COMMON,
    LABELS,
    METRICS,
    REGIMES,
    SELECT,
    TEST_CURVE,
    ZERO_SHOT,
    Regime,
    ablation_overrides,
    is_setting,
)
from quality_bench.runner import load_records


def fmt(mean: float, spread: float, signed: bool = False) -> str:
    """``mean ± spread`` with two decimals (the spread left out when NaN)."""
    number = f"{mean:+.2f}" if signed else f"{mean:.2f}"
    return number if math.isnan(spread) else f"{number} ± {spread:.2f}"


def method_label(memvir: bool, ablation: str) -> str:
    return ("MemVir" if memvir else "baseline") + (f" {ablation}" if ablation else "")


def _row_label(loss: str, memvir: bool, ablation: str) -> str:
    return f"{LABELS.get(loss, loss)} | " + ("zero-shot" if loss == ZERO_SHOT else method_label(memvir, ablation))


def results_table(groups: dict[tuple, list[dict]]) -> list[str]:
    """Test metrics (our protocol) per loss x method x epochs: mean ± std over seeds."""
    head = "| loss | method | epochs | seeds | selected epoch | " + " | ".join(
        f"test {m}" for m in METRICS) + " | minutes/run (shared CPU) |"
    lines = [head, "|" + "---|" * (6 + len(METRICS))]
    for (loss, memvir, ablation, epochs), rs in sorted(groups.items(), key=lambda kv: (
            kv[0][0] != ZERO_SHOT, kv[0][0], kv[0][2], kv[0][3], kv[0][1])):
        cells = [fmt(*stats.mean_std(stats.test_values(rs, m))) for m in METRICS]
        selected = ",".join(str(int(r["best"].get("epoch", 0))) for r in rs)
        minutes = statistics.fmean(r["seconds"] for r in rs) / 60
        lines.append(f"| {_row_label(loss, memvir, ablation)} | {epochs} | {len(rs)} | {selected} | "
                     + " | ".join(cells) + f" | {minutes:.1f} |")
    return lines


def _verdict(d: float, se: float) -> str:
    if math.isnan(se):
        return "n/a (1 seed)"
    if abs(d) > 2 * se:
        return "yes, MemVir " + ("better" if d > 0 else "worse")
    return "no"


def comparison_rows(groups: dict[tuple, list[dict]], ablation: str = "", long_factor: int = 2) -> list[str]:
    """The :func:`stats.comparisons` (of the plain runs, or of ``ablation``'s) as table rows:
    test Δ per metric, mean ± Welch SE over seeds."""
    head = "| loss | comparison | seeds (MemVir/base) | " + " | ".join(
        f"Δ {m}" for m in METRICS) + " | abs(Δ R@1) > 2 SE? |"
    lines = [head, "|" + "---|" * (4 + len(METRICS))]
    for c in stats.comparisons(groups, ablation, long_factor):
        cells = [stats.difference(stats.test_values(c.memvir, m), stats.test_values(c.baseline, m)) for m in METRICS]
        lines.append(f"| {LABELS.get(c.loss, c.loss)} | {c.label} | {len(c.memvir)}/{len(c.baseline)} | "
                     + " | ".join(fmt(*d, signed=True) for d in cells) + f" | {_verdict(*cells[0])} |")
    return lines


def ablation_rows(groups: dict[tuple, list[dict]], ablation_baseline: str = "") -> list[str]:
    """Each ablation (mean over its seeds) against the default MemVir and the baseline
    (:func:`stats.baseline_of`) at the same epochs and seeds: Δ test R@1 ± Welch SE."""
    head = ("| setting | overrides | seeds | test R@1 | test MAP@R | Δ R@1 vs default MemVir "
            "| Δ R@1 vs baseline |")
    lines = [head, "|---|---|---|---|---|---|---|"]
    for a in stats.ablations_vs_baseline(groups, ablation_baseline):
        r1 = stats.test_values(a.runs, "recall@1")
        cells = [fmt(*stats.difference(r1, stats.test_values(ref, "recall@1")), signed=True) if ref else "–"
                 for ref in (a.memvir, a.baseline)]
        lines.append(f"| {LABELS.get(a.loss, a.loss)} MemVir {a.ablation} (E={a.runs[0]['epochs']}) | "
                     f"`{' '.join(ablation_overrides(a.ablation))}` | "
                     f"{','.join(str(r['seed']) for r in sorted(a.runs, key=lambda r: r['seed']))} | "
                     f"{fmt(*stats.mean_std(r1))} | {fmt(*stats.mean_std(stats.test_values(a.runs, 'map@r')))} | "
                     f"{cells[0]} | {cells[1]}{f' (baseline {a.baseline_name})' if a.baseline_name else ''} |")
    return lines


def sweep_rows(scores: Sequence[stats.SettingScore], chosen: set[str]) -> list[str]:
    """The settings sweep on validation only: each setting's selected-epoch val MAP@R and R@1."""
    lines = ["| loss | setting | overrides | epochs | seeds | val MAP@R | val R@1 | selected epoch | chosen |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in scores:
        mark = "**yes**" if s.run_key in chosen else ""
        lines.append(f"| {LABELS.get(s.loss, s.loss)} | {s.setting} | `{' '.join(ablation_overrides(s.setting))}` | "
                     f"{s.budget} | {','.join(map(str, s.seeds))} | {fmt(*s.val_map_r)} | {fmt(*s.val_recall_1)} | "
                     f"{','.join(map(str, s.selected))} | {mark} |")
    return lines


#: what the report shows for a run recorded before runs kept their CPU's name
NO_CPU = "not recorded"


def sooner_rows(groups: dict[tuple, list[dict]], reference: str = "", share: float = 0.99) -> list[str]:
    """Per loss: the epochs and fitting minutes each arm needs to reach ``share`` of the best
    validation MAP@R of the baseline ``reference`` (the longest run of it; mean over seeds)."""
    lines = ["| loss | arm | epochs | target val MAP@R | runs reaching it | epochs to reach | minutes to reach "
             "| best val MAP@R | timed on |", "|---|---|---|---|---|---|---|---|---|"]
    for loss in sorted({k[0] for k in groups if k[0] != ZERO_SHOT}):
        refs = sorted((k for k in groups if k[0] == loss and not k[1] and k[2] == reference), key=lambda k: k[3])
        if not refs:
            continue
        target = share * statistics.fmean(stats.best_val(r) for r in groups[refs[-1]])
        if math.isnan(target):  # runs from before validation MAP@R was logged
            continue
        for (lo, memvir, ablation, epochs), rs in sorted(groups.items()):
            if lo != loss:
                continue
            t = stats.time_to_target(rs, target)
            lines.append(f"| {LABELS.get(loss, loss)} | {method_label(memvir, ablation)} | {epochs} | {target:.2f} | "
                         f"{t.reached}/{t.runs} | {fmt(*t.epochs) if t.reached else '–'} | "
                         f"{fmt(*t.minutes) if t.reached else '–'} | "
                         f"{fmt(*stats.mean_std([stats.best_val(r) for r in rs]))} | "
                         f"{', '.join(sorted({r.get('cpu', NO_CPU) for r in rs}))} |")
    return lines


# ---------------------------------------------------------------------------- protocol audit
def audit_rows(groups: dict[tuple, list[dict]], long_factor: int = 2) -> list[str]:
    """MemVir − baseline of every comparison under both protocols (mean ± Welch SE)."""
    head = "| loss | comparison | protocol | seeds (MemVir/base) | " + " | ".join(
        f"Δ {m}" for m in AUDIT_METRICS) + " |"
    lines = [head, "|" + "---|" * (4 + len(AUDIT_METRICS))]
    for c in stats.comparisons(groups, long_factor=long_factor):
        for name, protocol in stats.PROTOCOLS.items():
            cells = [fmt(*stats.difference(stats.test_values(c.memvir, m, protocol),
                                           stats.test_values(c.baseline, m, protocol)), signed=True)
                     for m in AUDIT_METRICS]
            lines.append(f"| {LABELS.get(c.loss, c.loss)} | {c.label} | {name} | {len(c.memvir)}/{len(c.baseline)} | "
                         + " | ".join(cells) + " |")
    return lines


def protocol_gain_rows(groups: dict[tuple, list[dict]]) -> list[str]:
    """Per loss x method x epochs: what the best test epoch adds to a run, (b) − (a)."""
    head = "| loss | method | epochs | runs | " + " | ".join(f"(b) − (a) {m}" for m in AUDIT_METRICS) + " |"
    lines = [head, "|" + "---|" * (4 + len(AUDIT_METRICS))]
    for (loss, memvir, ablation, epochs), rs in sorted(groups.items()):
        if loss == ZERO_SHOT:
            continue
        cells = [fmt(*stats.protocol_gain(rs, m), signed=True) for m in AUDIT_METRICS]
        lines.append(f"| {_row_label(loss, memvir, ablation)} | {epochs} | {len(rs)} | " + " | ".join(cells) + " |")
    return lines


def decomposition_rows(groups: dict[tuple, list[dict]], long_factor: int = 2) -> list[str]:
    """Per loss, budget E and metric: MemVir − baseline from our setting to the paper's."""
    k = f"{long_factor}E"
    lines = [f"| loss | E | metric | ours: (a), E vs E | + budget: (a), {k} vs E | + protocol: (b), {k} vs E "
             f"| = official: (b), {k} vs E |", "|---|---|---|---|---|---|---|"]
    for loss in sorted({k[0] for k in groups}):
        for e in sorted({k[3] for k in groups if k[0] == loss and not k[2]}):
            for m in AUDIT_METRICS:
                d = stats.decompose(groups, loss, e, m, long_factor)
                if d is not None:
                    lines.append(f"| {LABELS.get(loss, loss)} | {e} | {m} | {d.ours:+.2f} | {d.budget:+.2f} | "
                                 f"{d.protocol:+.2f} | {d.official:+.2f} |")
    return lines


def audit_section(records: Sequence[dict], long_factor: int = 2) -> list[str]:
    """The protocol-audit part of a report ([] when no run has a per-epoch test curve)."""
    runs = stats.audited(records)
    if not runs:
        return []
    trained = [r for r in records if not r.get("same_as")]
    groups = stats.group(runs)
    decomposition = decomposition_rows(groups, long_factor)
    paper = [
        "MemVir − baseline from our setting to the paper's (MemVir trained longer than its baseline"
        f" and scored by its best test epoch; the paper's budget ratio is 15x, ours {long_factor}x); the"
        " columns add up: ours + budget + protocol = official.", "", *decomposition, ""]
    return [
        "## Protocol audit", "",
        f"{len(stats.audited(trained))} of {len(trained)} runs evaluate the test classes at every validation (`{TEST_CURVE}`,"
        " in runs that log a per-epoch test curve; the zero-shot row once). (a): our"
        f" protocol, the test metrics of the epoch chosen on validation by `{SELECT}`; (b): the"
        " official code's, the best test value over every evaluated epoch, per metric on its own."
        " In %, Δ = MemVir − baseline ± Welch SE over seeds.", "",
        *audit_rows(groups, long_factor), "",
        "What picking the best test epoch adds to one run, (b) − (a), mean ± std over runs:", "",
        *protocol_gain_rows(groups), "",
        *(paper if len(decomposition) > 2 else []),
    ]


# ---------------------------------------------------------------------------- plots
def summary_plot(regime_names: Sequence[str], runs_dir: Path, path: Path) -> Path:
    """One figure of MemVir − baseline test Recall@1 (± 2 Welch SE where there are ≥ 2 seeds
    a side) for every comparison and ablation of the given regimes: what the effect depends on."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars: list[tuple[str, float, float]] = []
    for name in regime_names:
        records = load_records(runs_dir / name)
        if not records:
            continue
        groups = stats.group(records)
        short = name.replace("glyphs_", "")
        factor = REGIMES[name].long_factor if name in REGIMES else 2
        for c in stats.comparisons(groups, long_factor=factor):
            d, se = stats.difference(stats.test_values(c.memvir, "recall@1"), stats.test_values(c.baseline, "recall@1"))
            bars.append((f"{short}: {LABELS.get(c.loss, c.loss)} {c.label} n={len(c.memvir)}/{len(c.baseline)}",
                         d, se))
        reference = REGIMES[name].ablation_baseline if name in REGIMES else ""
        for a in stats.ablations_vs_baseline(groups, reference):
            if a.baseline:
                d, se = stats.difference(stats.test_values(a.runs, "recall@1"), stats.test_values(a.baseline, "recall@1"))
                vs = f" vs baseline {a.baseline_name}" if a.baseline_name else ""
                bars.append((f"{short}: {LABELS.get(a.loss, a.loss)} MemVir {a.ablation} (E={a.runs[0]['epochs']})"
                             f"{vs} n={len(a.runs)}/{len(a.baseline)}", d, se))
    if not bars:
        raise FileNotFoundError(f"no cached runs under {runs_dir} for {list(regime_names)}")
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(bars) + 1.2))
    ys = range(len(bars))[::-1]
    for y, (_, d, se) in zip(ys, bars, strict=True):
        ax.barh(y, d, color="tab:green" if d > 0 else "tab:red", alpha=0.7)
        if not math.isnan(se):
            ax.errorbar(d, y, xerr=2 * se, color="black", capsize=3)
    ax.set_yticks(list(ys), [label for label, _, _ in bars], fontsize=7)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("MemVir − baseline, test Recall@1 (points; bars ± 2 SE over seeds)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _curve(ax, records: Sequence[dict], label: str, dashed: bool) -> None:
    """Mean val Recall@1 (%) of ``records`` against epoch."""
    by_epoch: dict[int, list[float]] = {}
    for r in records:
        for row in r["val_curve"]:
            by_epoch.setdefault(row["epoch"], []).append(100 * row["val/recall@1"])
    xs = sorted(by_epoch)
    ax.plot(xs, [statistics.fmean(by_epoch[x]) for x in xs], linestyle="--" if dashed else "-",
            marker="o", markersize=3, label=label)


def plot_curves(groups: dict[tuple, list[dict]], path: Path, title: str) -> None:
    """Validation Recall@1 against epoch: per loss, baseline and MemVir (mean over seeds); per
    loss with ablations, a second panel of the ablation runs and the same-seed default runs;
    the zero-shot row as a grey line in every panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor = groups.get((ZERO_SHOT, False, "", 0))
    groups = {k: rs for k, rs in groups.items() if k[0] != ZERO_SHOT}
    losses = sorted({k[0] for k in groups})
    panels = [(loss, False) for loss in losses] + [
        (loss, True) for loss in losses if any(k[0] == loss and k[2] for k in groups)]
    fig, axes = plt.subplots(1, len(panels), figsize=(max(7, 5.5 * len(panels)), 4.5), squeeze=False)
    for ax, (loss, ablations) in zip(axes[0], panels, strict=True):
        seeds = {r["seed"] for k, rs in groups.items() if k[0] == loss and k[2] for r in rs}
        for (lo, memvir, ablation, epochs), rs in sorted(groups.items()):
            if lo != loss or (bool(ablation) and not ablations):
                continue
            if ablations:
                rs = [r for r in rs if r["seed"] in seeds]
                if not rs or (not ablation and epochs != min(k[3] for k in groups if k[2])):
                    continue
            label = f"{method_label(memvir, ablation)} E={epochs} (n={len(rs)})"
            _curve(ax, rs, label, dashed=not memvir)
        if floor:
            ax.axhline(100 * floor[0]["best"]["val/recall@1"], color="grey", linewidth=1, label="zero-shot")
        name = LABELS.get(loss, loss) + (f" ablations, seed {sorted(seeds)}" if ablations else "")
        ax.set(title=name, xlabel="epoch", ylabel="val Recall@1 (%)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a panel may have no plain runs yet
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------- the report
def same_as_lines(records: Sequence[dict]) -> list[str]:
    """One line per ablation whose runs repeat the plain runs' configuration (``same_as``)."""
    aliases: dict[tuple, list[int]] = {}
    for r in records:
        if r.get("same_as"):
            aliases.setdefault((r["loss"], r["memvir"], r["ablation"]), []).append(r["seed"])
    return [f"- {LABELS.get(loss, loss)} {method_label(memvir, ablation)} (seeds {', '.join(map(str, sorted(seeds)))}):"
            f" the same configuration as {method_label(memvir, '')} (the ablation changes nothing in that arm),"
            " so those runs are listed under both names, not trained twice"
            for (loss, memvir, ablation), seeds in sorted(aliases.items())]


def write_report(regime_name: str, regime: Regime, cache_dir: Path, out_dir: Path, command: str) -> Path:
    """``quality_<regime>.md`` (+ the val Recall@1 plot) from every cached run of the regime."""
    records = load_records(cache_dir)
    if not records:
        raise FileNotFoundError(f"no cached runs in {cache_dir}; run the grid first (without --report-only).")
    scores = stats.sweep_scores(stats.group(records), is_setting)
    chosen = stats.chosen_settings(scores)
    # the settings not chosen on validation stay out of every test table
    records = [r for r in records if not is_setting(r["ablation"]) or stats.run_key(r) in chosen]
    groups = stats.group(records)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot = out_dir / f"quality_{regime_name}_val_recall.png"
    plot_curves(groups, plot, regime.description)
    arms = [f"MemVir runs `{' '.join(regime.memvir_overrides)}`" if regime.memvir_overrides else "",
            *(f"MemVir {LABELS.get(loss, loss)} `{' '.join(o)}`" for loss, o in regime.loss_memvir_overrides.items()),
            f"baseline runs `{' '.join(regime.arm_overrides('', False, regime.epochs))}` at E"
            if regime.arm_overrides("", False, regime.epochs) else ""]
    arms = [a for a in arms if a]
    lines = [
        f"# Retrieval quality, regime {regime.description}",
        "",
        f"This report: `{command}`. The runs (each command started twice, as two workers sharing"
        " the grid, at low priority with `OMP_NUM_THREADS=1 nice`):",
        "",
        *(f"- `{c}`: {n} runs" for c, n in sorted(Counter(
            r.get("command") or "(command not recorded)" for r in records if not r.get("same_as")).items())),
        *same_as_lines(records),
        "",
        f"Overrides of every run: `{' '.join([*regime.common_overrides(), *COMMON])}`; MemVir = `memvir=default`"
        " (N=5, M=50, U=2, exact, float32)"
        + (f", with {'; '.join(arms)}" if arms else "")
        + " unless an ablation says otherwise. Epoch selected on the"
        f" validation classes by `{SELECT}` (the checkpoint tested); test metrics in %, mean ± std"
        " over seeds. Δ = MemVir − baseline, ± its Welch standard error over seeds.",
        "",
        "## Test metrics",
        "",
        *results_table(groups),
        "",
        "## MemVir − baseline",
        "",
        *comparison_rows(groups, long_factor=regime.long_factor),
        "",
    ]
    reference = regime.ablation_baseline
    reference_rows = comparison_rows(groups, reference, regime.long_factor) if reference else []
    if len(reference_rows) > 2:
        lines += [f"## MemVir − baseline `{reference}` (both arms `{' '.join(ablation_overrides(reference))}`:"
                  " the baseline trained like MemVir apart from MemVir)", "", *reference_rows, ""]
    ablations = ablation_rows(groups, reference)
    if len(ablations) > 2:
        others = (f"; the others with the baseline `{reference}` (`{' '.join(ablation_overrides(reference))}`),"
                  " trained like MemVir apart from MemVir" if reference else "")
        lines += ["## Ablations (MemVir, one setting changed; Δ ± Welch SE over the"
                  " seeds run, n/a with one seed; settings in "
                  f"{sorted(BOTH_ARMS)} change the baseline too and are compared with it{others})", "",
                  *ablations, ""]
    if scores:
        lines += ["## Settings sweep (validation only)", "",
                  "Each MemVir part's N and M chosen by the validation classes alone (the selected epoch's"
                  f" `{SELECT}`, on the seeds every setting has); the test tables above show only the chosen"
                  " setting.", "", *sweep_rows(scores, chosen), ""]
    sooner = sooner_rows(groups, reference)
    if len(sooner) > 2:
        lines += ["## Better, or sooner?", "",
                  f"Epochs and minutes of fitting (one thread, wall clock from the start of training, evaluations"
                  " included; a run without an epoch clock: its whole time pro rata of its epochs) each arm needs"
                  " to reach 99 % of"
                  f" the best validation MAP@R of the baseline{f' `{reference}`' if reference else ''} (its longest"
                  " run, mean over seeds); mean ± std over the runs that reach it. Minutes compare only between runs"
                  " timed on the same CPU (the last column).", "", *sooner, ""]
    lines += audit_section(records, regime.long_factor)
    lines += [f"Validation Recall@1 per epoch: `{plot.name}`.", ""]
    table = out_dir / f"quality_{regime_name}.md"
    table.write_text("\n".join(lines))
    return table
