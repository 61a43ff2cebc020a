"""Retrieval-quality benchmark: does MemVir help the same loss, model and data?

For each loss x {no MemVir, MemVir} x seed, trains ``memvir_pl.train.train(cfg)`` on a
composed Hydra config, selects the epoch on the validation classes (best val MAP@R:
the checkpoint monitor and ``optimized_metric``), and reports the test metrics of that
checkpoint as mean ± std over seeds plus the MemVir − baseline difference with its
standard error (Welch: sqrt(s_a²/n_a + s_b²/n_b)). Budgets: ``E`` epochs for both (equal
epochs), MemVir at ``kE`` (the regime's ``long_factor``, 2 unless it says otherwise) against
the baseline at ``E`` (MemVir trained longer, as the paper does) and the budget-matched control
(baseline at ``kE``); ``--arms base`` (or ``memvir``) trains one arm of these plain runs
only. Ablations vary one MemVir setting of each loss's run (at ``E``; ``--ablation-budgets
long`` adds ``kE``); a MemVir part with its own N and M
(``virtual_proxies-N3-M20``) is a settings sweep, chosen on validation alone; those in
``BOTH_ARMS`` (the lr schedules) change the baseline too, and a regime's ``ablation_baseline``
(e.g. ``const``) is also compared arm against arm like the plain runs. ``--summary`` draws
every regime's differences in one figure; ``--rule`` writes the one-table summary over regimes and what
the recommendation rule (``quality_bench/rule.py``) says.

Every run also evaluates the test classes at each validation; the report's protocol audit
sets our protocol (test at the epoch chosen on validation) beside the official code's (the
best test value over all evaluated epochs) and decomposes MemVir − baseline from our setting
to the paper's (longer MemVir budget, best test epoch). Pretrained regimes start with a
zero-shot row (pooled ImageNet features, no training).

Each finished run leaves ``<cache>/<regime>/<run>.json`` (test/best metrics and the
per-epoch validation and test curves from the run's ``csv/metrics.csv``); runs whose JSON
exists are skipped, so the grid can be run in pieces; a run being trained is claimed by a
``<run>.running`` file (its worker's pid), so two workers started alike share the grid.
Then ``benchmarks/results/quality_<regime>.md`` and ``quality_<regime>_val_recall.png`` are
written from every cached run of the regime. The regimes, the runner, the statistics and the
reports live in ``benchmarks/quality_bench/``.

    python benchmarks/quality.py --regime glyphs_cnn --losses norm_softmax proxy_anchor \
        --seeds 0 1 2          # start the same command twice for two workers
    python benchmarks/quality.py --regime glyphs_cnn --report-only
    python benchmarks/quality.py --regime emoji_effnet --plan   # predicted minutes per run here
    python benchmarks/quality.py --tiny --out /tmp/q   # smoke test (a few steps)
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from quality_bench import report, runner
from quality_bench.data_report import data_report
from quality_bench.grid import ARMS, BUDGETS, grid
from quality_bench.regimes import ABLATIONS, LOSSES, REGIMES

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--regime", choices=sorted(REGIMES), default="glyphs_cnn")
    p.add_argument("--losses", nargs="+", choices=sorted(LOSSES), default=["norm_softmax", "proxy_anchor"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--budgets", nargs="*", choices=sorted(BUDGETS), default=["equal", "long"],
                   help="epochs of the plain runs: equal = E for both arms, long = the regime's long_factor x E "
                        "for both (none: ablations only)")
    p.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=sorted(ARMS),
                   help="arms of the plain runs (default both): base = without MemVir, memvir = with it")
    p.add_argument("--ablations", nargs="*", default=[],
                   help=f"of {sorted(ABLATIONS)}, or a MemVir part with its N and M (e.g. virtual_proxies-N3-M20: "
                        "a settings sweep, chosen on validation in the report), or several joined by + "
                        "(virtual_proxies-N10-M5+real_negatives)")
    p.add_argument("--ablation-budgets", nargs="+", choices=sorted(BUDGETS), default=["equal"],
                   help="epochs of the ablation runs (default E only)")
    p.add_argument("--epochs", type=int, default=None, help="E (default: the regime's)")
    p.add_argument("--out", type=Path, default=None,
                   help="results folder (default benchmarks/results; the run cache is under its runs/)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="run directories with checkpoints (default <out>/../quality_work, not committed)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--plan", action="store_true",
                   help="only measure the regime's training step and evaluation here and predict minutes per run")
    p.add_argument("--data-report", metavar="DATA", default=None,
                   help="only build/load conf/data/DATA.yaml's glyph or emoji set and write its report")
    p.add_argument("--tiny", action="store_true",
                   help="smoke test: regime tiny (a few steps, zero-shot row included), 1 seed, NormSoftmax")
    p.add_argument("--rule", nargs="+", metavar="REGIME", default=None,
                   help="only write quality_rule.md: the one-table summary of these regimes (baseline, MemVir and "
                        "its virtual-proxy parts) and what the recommendation rule says")
    p.add_argument("--summary", nargs="+", metavar="REGIME", default=None,
                   help="only draw quality_summary.png: Δ R@1 of every comparison and ablation of these regimes")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> Path | str:
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
    if args.rule:
        from quality_bench.rule import rule_report

        path = rule_report(args.rule, out_dir / "runs", out_dir / "quality_rule.md", command)
        print(path.read_text())
        return path
    if args.summary:
        path = report.summary_plot(args.summary, out_dir / "runs", out_dir / "quality_summary.png")
        print(path)
        return path
    if args.data_report and args.data_report.startswith("emoji"):  # one report covers emoji and emoji_few
        import os

        from quality_bench.emoji_report import data_report as emoji_data_report

        packages = Path(os.environ.get("MEMVIR_DATA", runner.REPO / "data")) / "emoji" / "packages"
        if packages.is_relative_to(Path.cwd()):
            packages = packages.relative_to(Path.cwd())  # the report names it as a user would type it
        text = emoji_data_report(packages, out_dir, work_dir.parent / ".cache", command)
        (out_dir / "emoji_data.md").write_text(text)
        print(text)
        return out_dir / "emoji_data.md"
    if args.data_report:
        path = data_report(args.data_report, out_dir, work_dir.parent / ".cache", command)
        print(path.read_text())
        return path
    if args.plan or not args.report_only:
        import torch

        torch.set_num_threads(args.threads)
    if args.plan:
        from quality_bench.plan import plan

        text = plan(args.regime, regime, work_dir)
        print(text)
        return text
    if not args.report_only:
        specs = grid(regime, args.losses, args.seeds, args.ablations, args.budgets, args.ablation_budgets,
                     args.arms)
        runner.run_grid(args.regime, specs, regime, work_dir, cache_dir, command)
    table = report.write_report(args.regime, regime, cache_dir, out_dir, command)
    print(table.read_text())
    return table


if __name__ == "__main__":
    main()
