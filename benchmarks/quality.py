"""Retrieval-quality benchmark: does MemVir help the same loss, model and data? (issue 5)

For each loss x {no MemVir, MemVir} x seed, trains ``memvir_pl.train.train(cfg)`` on a
composed Hydra config, selects the epoch on the validation characters (best val MAP@R:
the checkpoint monitor and ``optimized_metric``), and reports the test metrics of that
checkpoint as mean ± std over seeds plus the MemVir − baseline difference with its
standard error (Welch: sqrt(s_a²/n_a + s_b²/n_b)). Budgets: ``E`` epochs for both (equal
epochs), MemVir at ``2E`` against the baseline at ``E`` (MemVir trained longer, as the
paper does) and the budget-matched control (baseline at ``2E``). Ablations vary one MemVir
setting of the equal-epoch NormSoftmax run; those in ``BOTH_ARMS`` (the lr schedule) change
the baseline too. ``--summary`` draws every regime's differences in one figure.

Each finished run leaves ``<cache>/<regime>/<run>.json`` (test/best metrics and the
per-epoch validation curve from the run's ``csv/metrics.csv``); runs whose JSON exists
are skipped, so the grid can be run in pieces; a run being trained is claimed by a
``<run>.running`` file (its worker's pid), so two workers started alike share the grid.
Then ``benchmarks/results/quality_<regime>.md`` and ``quality_<regime>_val_recall.png`` are
written from every cached run of the regime.

    python benchmarks/quality.py --regime glyphs_cnn --losses norm_softmax proxy_anchor \
        --seeds 0 1 2          # start the same command twice for two workers
    python benchmarks/quality.py --regime glyphs_cnn --report-only
    python benchmarks/quality.py --tiny --out /tmp/q   # smoke test (a few steps)
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import shlex
import shutil
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
METRICS = ("recall@1", "recall@2", "recall@4", "recall@8", "map@r")
SELECT = "val/map@r"
COMMON = [
    "callbacks.rich_progress_bar=null",
    "logger=csv",
    f"optimized_metric={SELECT}",
    f"callbacks.model_checkpoint.monitor={SELECT}",
    # the tested checkpoints keep the MemVir memory, for benchmarks/memvir_drift.py
    "callbacks.model_checkpoint.save_weights_only=false",
]
LOSSES = {
    "norm_softmax": "NormSoftmax",
    "proxy_nca": "ProxyNCA",
    "proxy_anchor": "ProxyAnchor",
    "cosface": "CosFace",
    "arcface": "ArcFace",
}
# One MemVir setting changed at a time from the regime's default (N5 M50 U2, exact, float32).
ABLATIONS = {
    "N1": ["memvir.num_steps=1"],
    "N10": ["memvir.num_steps=10"],
    "M10": ["memvir.step_gap=10"],
    "M100": ["memvir.step_gap=100"],
    "U0": ["memvir.warmup_epochs=0"],
    "U5": ["memvir.warmup_epochs=5"],
    "saving": ["memvir.proxy_mode=saving"],
    "bf16": ["memvir.storage_dtype=bfloat16"],
    # memory rows weigh 1/N: the N memory blocks together weigh as much as the current batch
    "w0.2": ["memvir.memory_weight=0.2"],
    # The official MemVir runs keep the lr constant (PAPER.md): with a decaying lr the stored
    # proxies converge to the current ones, and each virtual class becomes a copy of a real one.
    "const": ["module.lr_schedule=constant"],
}
#: Ablations of the training setting rather than of MemVir: the baseline runs with them too.
BOTH_ARMS = frozenset({"const"})


@dataclass(frozen=True)
class Regime:
    """A model x data setting: its overrides and the equal-epoch budget E."""

    description: str
    overrides: tuple[str, ...]
    epochs: int
    memvir_overrides: tuple[str, ...] = ()


REGIMES = {
    "glyphs_cnn": Regime(
        "(i) small CNN from scratch, glyphs (a): matplotlib fonts, 32 px",
        ("data=glyphs", "model=small_cnn"),
        epochs=8,
    ),
    # ~435 steps per epoch (53k training images): warm-up 1 epoch keeps MemVir on for the same
    # share of training (3/4) as U=2 of E=8 in regime (i).
    "glyphs_cjk_cnn": Regime(
        "(ii) small CNN from scratch, glyphs (b): Debian CJK fonts, 32 px",
        ("data=glyphs_cjk", "model=small_cnn"),
        epochs=4,
        memvir_overrides=("memvir.warmup_epochs=1",),
    ),
    # The glyph preset's (x/255 - 0.5)/0.5 equals EfficientNet-Lite0's (x - 127)/128 to 0.4 %;
    # 64 px so that the 32x down-sampling leaves a 2x2 map.
    # ~1.3 s per step of 128 on one CPU thread: an epoch is 100 random batches (12,800 of the
    # 53k training images), the paper's lr 1e-4 for a pretrained backbone; MemVir warms up for
    # one epoch and snapshots every 11th step, so its memory fills within the second epoch.
    "glyphs_cjk_effnet": Regime(
        "(iii) EfficientNet-Lite0 (ImageNet) fine-tuned, glyphs (b), 64 px, 100 steps per epoch",
        ("data=glyphs_cjk", "model=efficientnet_lite0", "data.image_size=64", "module.lr=1.0e-4",
         "+trainer.limit_train_batches=100"),
        epochs=3,
        memvir_overrides=("memvir.warmup_epochs=1", "memvir.step_gap=10"),
    ),
    # The paper's CUB-200-2011 and CARS196 train on 100 and 98 classes; glyphs (a) train on
    # ~700. A 6.5 % train share of the characters (~100 classes, ~11 steps per epoch) asks
    # whether MemVir's extra classes help where real classes are few (MemVir as in regime (i);
    # its ablations here show how the result depends on N, M and U).
    "glyphs_cnn_few": Regime(
        "(i-b) small CNN from scratch, glyphs (a) with ~100 training characters, 32 px",
        ("data=glyphs", "model=small_cnn",
         "data.options.fractions={train:0.065,val:0.15,test:0.785}"),
        epochs=40,
    ),
    "tiny": Regime(
        "smoke test: a few steps on a Latin subset",
        (
            "data=glyphs",
            "model=small_cnn",
            "data.options.chars='U+0041-U+005A, U+0061-U+007A, U+0391-U+03C9'",
            "data.batch_size=32",
            "+trainer.limit_train_batches=3",
            "+trainer.limit_val_batches=2",
            "+trainer.limit_test_batches=2",
        ),
        epochs=1,
        memvir_overrides=("memvir.num_steps=1", "memvir.step_gap=0", "memvir.warmup_epochs=0"),
    ),
}


@dataclass(frozen=True)
class RunSpec:
    """One training run of the grid."""

    loss: str
    memvir: bool
    epochs: int
    seed: int
    ablation: str = ""
    extra: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        method = ("memvir" if self.memvir else "base") + (f"-{self.ablation}" if self.ablation else "")
        return f"{self.loss}-{method}-e{self.epochs}-s{self.seed}"

    def overrides(self, regime: Regime) -> list[str]:
        return [
            *regime.overrides,
            f"loss={self.loss}",
            f"memvir={'default' if self.memvir else 'none'}",
            f"trainer.max_epochs={self.epochs}",
            f"seed={self.seed}",
            *COMMON,
            *(regime.memvir_overrides if self.memvir else ()),
            *self.extra,
        ]


def grid(regime: Regime, losses: Sequence[str], seeds: Sequence[int], ablations: Sequence[str],
         budgets: Sequence[str]) -> list[RunSpec]:
    """The runs, most important first: the equal-epoch pairs of every seed and loss, then the
    longer budget (MemVir at 2E, then the baseline at 2E), then the ablations (NormSoftmax
    MemVir at E with one setting changed, every seed)."""
    e = regime.epochs
    specs = [RunSpec(loss, memvir, e, seed) for seed in seeds for loss in losses
             for memvir in (False, True)]
    if "long" in budgets:
        specs += [RunSpec(loss, memvir, 2 * e, seed) for seed in seeds for loss in losses
                  for memvir in (True, False)]
    for name in ablations:
        if name not in ABLATIONS:
            raise ValueError(f"unknown ablation {name!r}; choose from {sorted(ABLATIONS)}.")
        arms = (True, False) if name in BOTH_ARMS else (True,)
        specs += [RunSpec("norm_softmax", memvir, e, seed, name, tuple(ABLATIONS[name]))
                  for seed in seeds for memvir in arms]
    return specs


# ---------------------------------------------------------------------------- running
def val_curve(run_dir: Path) -> list[dict[str, float]]:
    """Per validated epoch (1-based) the val metrics, from the run's ``csv/metrics.csv``."""
    rows = []
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row.get("val/recall@1"):
                rows.append({"epoch": int(row["epoch"]) + 1,
                             **{k: float(v) for k, v in row.items() if k.startswith("val/") and v}})
    return rows


def run_one(spec: RunSpec, regime: Regime, work_dir: Path, cache_dir: Path,
            command: str = "") -> dict[str, Any]:
    """Train and test one run (in this process); returns and caches its result record, which
    keeps the ``command`` that started it."""
    from memvir_pl.config import compose_config
    from memvir_pl.train import train

    run_dir = work_dir / spec.name
    shutil.rmtree(run_dir, ignore_errors=True)  # a run killed before it finished starts afresh
    overrides = [*spec.overrides(regime), f"paths.cache_dir={work_dir.parent / '.cache'}"]
    cfg = compose_config(overrides, run_dir)
    start = time.perf_counter()
    metrics = train(cfg)
    record = {
        "name": spec.name, "loss": spec.loss, "memvir": spec.memvir, "epochs": spec.epochs,
        "seed": spec.seed, "ablation": spec.ablation, "overrides": spec.overrides(regime),
        "seconds": round(time.perf_counter() - start, 1), "best": metrics["best"],
        "test": metrics["test"], "test_checkpoint": metrics.get("test_checkpoint"),
        "val_curve": val_curve(run_dir), "run_dir": str(run_dir), "command": command,
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


# ---------------------------------------------------------------------------- report
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (ddof 1; NaN for one value)."""
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else math.nan


def difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """mean(a) − mean(b) and its Welch standard error (NaN unless both have ≥ 2 values)."""
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    return ma - mb, math.sqrt(sa**2 / len(a) + sb**2 / len(b))


def fmt(mean: float, spread: float, signed: bool = False) -> str:
    number = f"{mean:+.2f}" if signed else f"{mean:.2f}"
    return number if math.isnan(spread) else f"{number} ± {spread:.2f}"


def test_values(records: Sequence[dict], metric: str) -> list[float]:
    """Test ``metric`` of each record, in %."""
    return [100 * r["test"][f"test/{metric}"] for r in records]


def load_records(cache_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(cache_dir.glob("*.json"))]


def group(records: Sequence[dict]) -> dict[tuple, list[dict]]:
    """Records by (loss, memvir, ablation, epochs), seeds together."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["loss"], r["memvir"], r["ablation"], r["epochs"]), []).append(r)
    return groups


def method_label(memvir: bool, ablation: str) -> str:
    return ("MemVir" if memvir else "baseline") + (f" {ablation}" if ablation else "")


def results_table(groups: dict[tuple, list[dict]]) -> list[str]:
    head = "| loss | method | epochs | seeds | selected epoch | " + " | ".join(
        f"test {m}" for m in METRICS) + " | minutes/run (shared CPU) |"
    lines = [head, "|" + "---|" * (6 + len(METRICS))]
    for (loss, memvir, ablation, epochs), rs in sorted(groups.items(), key=lambda kv: (
            kv[0][0], kv[0][2], kv[0][3], kv[0][1])):
        cells = [fmt(*mean_std(test_values(rs, m))) for m in METRICS]
        selected = ",".join(str(int(r["best"].get("epoch", 0))) for r in rs)
        minutes = statistics.fmean(r["seconds"] for r in rs) / 60
        lines.append(f"| {LOSSES.get(loss, loss)} | {method_label(memvir, ablation)} | {epochs} | "
                     f"{len(rs)} | {selected} | " + " | ".join(cells) + f" | {minutes:.1f} |")
    return lines


def _verdict(d: float, se: float) -> str:
    if math.isnan(se):
        return "n/a (1 seed)"
    if abs(d) > 2 * se:
        return "yes, MemVir " + ("better" if d > 0 else "worse")
    return "no"


def comparisons(groups: dict[tuple, list[dict]]) -> list[tuple[str, str, list[dict], list[dict]]]:
    """(loss, label, MemVir runs, baseline runs) per loss at every epoch budget E run: equal
    epochs (E vs E) and MemVir trained twice as long (2E vs E). The budget-matched control
    (both at 2E) is the equal-epoch row of 2E."""
    pairs_found = []
    for loss in sorted({k[0] for k in groups}):
        budgets = sorted({k[3] for k in groups if k[0] == loss and not k[2]})
        pairs = [(f"equal epochs (E={e})", e, e) for e in budgets]
        pairs += [(f"MemVir 2x longer (E={2 * e} vs {e})", 2 * e, e) for e in budgets]
        for label, e_mem, e_base in pairs:
            mem, base = groups.get((loss, True, "", e_mem)), groups.get((loss, False, "", e_base))
            if mem and base:
                pairs_found.append((loss, label, mem, base))
    return pairs_found


def comparison_rows(groups: dict[tuple, list[dict]]) -> list[str]:
    """The :func:`comparisons` as table rows: test Δ per metric, mean ± Welch SE over seeds."""
    head = "| loss | comparison | seeds (MemVir/base) | " + " | ".join(
        f"Δ {m}" for m in METRICS) + " | abs(Δ R@1) > 2 SE? |"
    lines = [head, "|" + "---|" * (4 + len(METRICS))]
    for loss, label, mem, base in comparisons(groups):
        cells = [difference(test_values(mem, m), test_values(base, m)) for m in METRICS]
        lines.append(f"| {LOSSES.get(loss, loss)} | {label} | {len(mem)}/{len(base)} | "
                     + " | ".join(fmt(*c, signed=True) for c in cells) + f" | {_verdict(*cells[0])} |")
    return lines


def ablations_vs_baseline(groups: dict[tuple, list[dict]]) -> list[tuple[str, str, list[dict], list[dict], list[dict]]]:
    """(loss, ablation, its runs, default-MemVir runs, baseline runs) for every MemVir ablation;
    the references are restricted to the ablation's seeds and epochs, and the baseline ran with
    the same setting when the ablation is in :data:`BOTH_ARMS`."""
    found = []
    for (loss, memvir_arm, ablation, e), rs in sorted(groups.items()):
        if not ablation or not memvir_arm:
            continue
        seeds = {r["seed"] for r in rs}
        refs = [[x for x in groups.get((loss, memvir, ref_ablation, e), []) if x["seed"] in seeds]
                for memvir, ref_ablation in ((True, ""), (False, ablation if ablation in BOTH_ARMS else ""))]
        found.append((loss, ablation, rs, *refs))
    return found


def ablation_rows(groups: dict[tuple, list[dict]]) -> list[str]:
    """Each ablation (mean over its seeds) against the default MemVir and the baseline at the
    same epochs and seeds: Δ test R@1 ± Welch SE."""
    head = ("| setting | overrides | seeds | test R@1 | test MAP@R | Δ R@1 vs default MemVir "
            "| Δ R@1 vs baseline |")
    lines = [head, "|---|---|---|---|---|---|---|"]
    for loss, ablation, rs, mem, base in ablations_vs_baseline(groups):
        r1 = test_values(rs, "recall@1")
        cells = [fmt(*difference(r1, test_values(ref, "recall@1")), signed=True) if ref else "–"
                 for ref in (mem, base)]
        lines.append(f"| {LOSSES.get(loss, loss)} MemVir {ablation} (E={rs[0]['epochs']}) | "
                     f"`{' '.join(ABLATIONS.get(ablation, []))}` | "
                     f"{','.join(str(r['seed']) for r in sorted(rs, key=lambda r: r['seed']))} | "
                     f"{fmt(*mean_std(r1))} | {fmt(*mean_std(test_values(rs, 'map@r')))} | "
                     f"{cells[0]} | {cells[1]} |")
    return lines


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
        groups = group(records)
        short = name.replace("glyphs_", "")
        for loss, label, mem, base in comparisons(groups):
            d, se = difference(test_values(mem, "recall@1"), test_values(base, "recall@1"))
            bars.append((f"{short}: {LOSSES.get(loss, loss)} {label} n={len(mem)}/{len(base)}", d, se))
        for loss, ablation, rs, _, base in ablations_vs_baseline(groups):
            if base:
                d, se = difference(test_values(rs, "recall@1"), test_values(base, "recall@1"))
                vs = f" vs baseline {ablation}" if ablation in BOTH_ARMS else ""
                bars.append((f"{short}: {LOSSES.get(loss, loss)} MemVir {ablation} (E={rs[0]['epochs']})"
                             f"{vs} n={len(rs)}/{len(base)}", d, se))
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
    loss with ablations, a second panel of the ablation runs and the same-seed default runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
        name = LOSSES.get(loss, loss) + (f" ablations, seed {sorted(seeds)}" if ablations else "")
        ax.set(title=name, xlabel="epoch", ylabel="val Recall@1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(regime_name: str, regime: Regime, cache_dir: Path, out_dir: Path,
                 command: str) -> Path:
    """``quality_<regime>.md`` (+ the val Recall@1 plot) from every cached run of the regime."""
    records = load_records(cache_dir)
    if not records:
        raise FileNotFoundError(f"no cached runs in {cache_dir}; run the grid first (without --report-only).")
    groups = group(records)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot = out_dir / f"quality_{regime_name}_val_recall.png"
    plot_curves(groups, plot, regime.description)
    lines = [
        f"# Retrieval quality, regime {regime.description}",
        "",
        f"This report: `{command}`. The runs (each command started twice, as two workers sharing"
        " the grid, at low priority with `OMP_NUM_THREADS=1 nice`):",
        "",
        *(f"- `{c}`: {n} runs" for c, n in sorted(Counter(
            r.get("command") or "(command not recorded)" for r in records).items())),
        "",
        f"Overrides of every run: `{' '.join([*regime.overrides, *COMMON])}`; MemVir = `memvir=default`"
        " (N=5, M=50, U=2, exact, float32)"
        + (f" with `{' '.join(regime.memvir_overrides)}`" if regime.memvir_overrides else "")
        + " unless an ablation says otherwise. Epoch selected on the"
        f" validation characters by `{SELECT}` (the checkpoint tested); test metrics in %, mean ± std"
        " over seeds. Δ = MemVir − baseline, ± its Welch standard error over seeds.",
        "",
        "## Test metrics",
        "",
        *results_table(groups),
        "",
        "## MemVir − baseline",
        "",
        *comparison_rows(groups),
        "",
    ]
    ablations = ablation_rows(groups)
    if len(ablations) > 2:
        lines += ["## Ablations (NormSoftmax MemVir, one setting changed; Δ ± Welch SE over the"
                  " seeds run, n/a with one seed; settings in "
                  f"{sorted(BOTH_ARMS)} change the baseline too and are compared with it)", "",
                  *ablations, ""]
    lines += [f"Validation Recall@1 per epoch: `{plot.name}`.", ""]
    table = out_dir / f"quality_{regime_name}.md"
    table.write_text("\n".join(lines))
    return table


# ---------------------------------------------------------------------------- data report
def data_report(data: str, out_dir: Path, cache_dir: Path, command: str) -> Path:
    """``glyphs_<data>_data.md``: faces, design families, classes and images per split, and the
    images each family contributes."""
    from omegaconf import OmegaConf

    from memvir_pl.config import CONFIG_DIR
    from memvir_pl.data.fonts import font_family, resolve_fonts
    from memvir_pl.data.glyphs import load_glyph_set, split_of

    options = OmegaConf.merge(OmegaConf.load(CONFIG_DIR / "data" / "glyphs.yaml").options,
                              OmegaConf.load(CONFIG_DIR / "data" / f"{data}.yaml").get("options", {}))
    fonts = OmegaConf.to_container(options.fonts)
    start = time.perf_counter()
    glyphs = load_glyph_set(fonts, options.chars, 32, options.min_fonts, options.homoglyph_fraction,
                            cache_dir=cache_dir, per_family=options.per_family)
    seconds = time.perf_counter() - start
    faces = {face.name: face for face in resolve_fonts(fonts)}
    families = [font_family(faces[n]) for n in glyphs.font_names]
    per_class: dict[int, set[str]] = {}
    images_of: dict[str, int] = dict.fromkeys(families, 0)
    for cp, font_id in zip(glyphs.codepoints.tolist(), glyphs.font_ids.tolist(), strict=True):
        per_class.setdefault(cp, set()).add(families[font_id])
        images_of[families[font_id]] += 1
    fractions = dict(options.fractions)
    split = {cp: split_of(cp, fractions) for cp in per_class}
    split_classes = Counter(split.values())
    split_images = Counter(split[cp] for cp in glyphs.codepoints.tolist())
    family_counts = sorted(len(f) for f in per_class.values())
    unit = "faces" if options.per_family is None else f"design families, <= {options.per_family} per family"
    lines = [
        f"# Glyph data set `{data}`", "", f"Command: `{command}`", "",
        f"Fonts: `{fonts}`, chars `{options.chars}`, min_fonts {options.min_fonts} ({unit}).", "",
        f"- faces read: {glyphs.summary['fonts']} (skipped {glyphs.summary['fonts_skipped']}), "
        f"in {len(set(families))} design families ({sum(n > 0 for n in images_of.values())} with"
        " images; weights and the variants of memvir_pl.data.fonts.FAMILY_ALIASES merged)",
        f"- classes: {len(per_class)}; images: {len(glyphs.codepoints)}",
        f"- families per class: min {family_counts[0]}, median {family_counts[len(family_counts) // 2]}, "
        f"max {family_counts[-1]}",
        "- classes / images per split: " + ", ".join(
            f"{s} {split_classes[s]} / {split_images[s]}" for s in ("train", "val", "test")),
        f"- load/build time here: {seconds:.0f} s (builder summary: {glyphs.summary})",
        "", "| family | faces | images |", "|---|---|---|",
        *(f"| {fam} | {families.count(fam)} | {images_of[fam]} |" for fam in sorted(set(families))
          if images_of[fam]), "",
    ]
    path = out_dir / f"glyphs_{data}_data.md"
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path


# ---------------------------------------------------------------------------- CLI
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--regime", choices=sorted(REGIMES), default="glyphs_cnn")
    p.add_argument("--losses", nargs="+", choices=sorted(LOSSES), default=["norm_softmax", "proxy_anchor"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--budgets", nargs="+", choices=["equal", "long"], default=["equal", "long"])
    p.add_argument("--ablations", nargs="*", default=[], help=f"of {sorted(ABLATIONS)}")
    p.add_argument("--epochs", type=int, default=None, help="E (default: the regime's)")
    p.add_argument("--out", type=Path, default=None,
                   help="results folder (default benchmarks/results; the run cache is under its runs/)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="run directories with checkpoints (default <out>/../quality_work, not committed)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--data-report", metavar="DATA", default=None,
                   help="only build/load conf/data/DATA.yaml's glyph set and write its report")
    p.add_argument("--tiny", action="store_true", help="smoke test: regime tiny, 1 seed, NormSoftmax")
    p.add_argument("--summary", nargs="+", metavar="REGIME", default=None,
                   help="only draw quality_summary.png: Δ R@1 of every comparison and ablation of these regimes")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> Path:
    args = parse_args(argv)
    command = "python benchmarks/quality.py " + " ".join(shlex.quote(a) for a in (
        sys.argv[1:] if argv is None else argv))
    if args.tiny:
        args.regime, args.losses, args.seeds, args.budgets = "tiny", ["norm_softmax"], [0], ["equal"]
    regime = REGIMES[args.regime]
    if args.epochs is not None:
        regime = dataclasses.replace(regime, epochs=args.epochs)
    out_dir = args.out or RESULTS
    cache_dir = out_dir / "runs" / args.regime
    work_dir = (args.work_dir or out_dir.parent / "quality_work") / args.regime
    if args.summary:
        path = summary_plot(args.summary, out_dir / "runs", out_dir / "quality_summary.png")
        print(path)
        return path
    if args.data_report:
        path = data_report(args.data_report, out_dir, work_dir.parent / ".cache", command)
        print(path.read_text())
        return path
    if not args.report_only:
        import torch

        torch.set_num_threads(args.threads)
        work_dir.mkdir(parents=True, exist_ok=True)
        (work_dir.parent / ".gitignore").write_text("*\n")  # checkpoints: never committed
        cache_dir.mkdir(parents=True, exist_ok=True)
        for spec in grid(regime, args.losses, args.seeds, args.ablations, args.budgets):
            lock = cache_dir / f"{spec.name}.running"
            if (cache_dir / f"{spec.name}.json").exists() or not claim(lock):
                continue
            print(f"[quality] {args.regime}/{spec.name}", flush=True)
            try:
                run_one(spec, regime, work_dir, cache_dir, command)
            finally:
                lock.unlink(missing_ok=True)
    table = write_report(args.regime, regime, cache_dir, out_dir, command)
    print(table.read_text())
    return table


if __name__ == "__main__":
    main()
