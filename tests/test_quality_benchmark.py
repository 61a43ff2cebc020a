"""Smoke test of benchmarks/quality.py: a tiny grid, its table checked against the runs' metrics.json."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load_quality():
    spec = importlib.util.spec_from_file_location("quality", REPO / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


quality = _load_quality()


def test_difference_is_welch_standard_error():
    a, b = [80.0, 82.0, 84.0], [78.0, 79.0]
    # by hand: means 82 and 78.5; variances 4 and 0.5 -> SE = sqrt(4/3 + 0.5/2)
    diff, se = quality.difference(a, b)
    assert diff == pytest.approx(3.5)
    assert se == pytest.approx(math.sqrt(4 / 3 + 0.25))
    assert math.isnan(quality.difference([1.0], [2.0, 3.0])[1])


def test_grid_orders_main_runs_before_ablations_and_names_them_uniquely():
    regime = quality.REGIMES["glyphs_cnn"]
    specs = quality.grid(regime, ["norm_softmax"], [0, 1], ["N1"], ["equal", "long"])
    e = regime.epochs
    assert [s.name for s in specs] == [
        f"norm_softmax-base-e{e}-s0", f"norm_softmax-memvir-e{e}-s0",
        f"norm_softmax-base-e{e}-s1", f"norm_softmax-memvir-e{e}-s1",
        f"norm_softmax-memvir-e{2 * e}-s0", f"norm_softmax-base-e{2 * e}-s0",
        f"norm_softmax-memvir-e{2 * e}-s1", f"norm_softmax-base-e{2 * e}-s1",
        f"norm_softmax-memvir-N1-e{e}-s0", f"norm_softmax-memvir-N1-e{e}-s1",
    ]
    assert "memvir.num_steps=1" in specs[-1].overrides(regime)
    assert "memvir=none" in specs[0].overrides(regime)
    with pytest.raises(ValueError, match="unknown ablation"):
        quality.grid(regime, ["norm_softmax"], [0], ["N99"], ["equal"])
    # a training-setting ablation runs in both arms; regime MemVir overrides reach MemVir only
    both = quality.grid(quality.REGIMES["glyphs_cjk_cnn"], ["norm_softmax"], [0], ["const"], ["equal"])
    assert [s.name for s in both[2:]] == ["norm_softmax-memvir-const-e4-s0", "norm_softmax-base-const-e4-s0"]
    assert "module.lr_schedule=constant" in both[-1].overrides(quality.REGIMES["glyphs_cjk_cnn"])
    assert "memvir.warmup_epochs=1" in both[1].overrides(quality.REGIMES["glyphs_cjk_cnn"])
    assert "memvir.warmup_epochs=1" not in both[0].overrides(quality.REGIMES["glyphs_cjk_cnn"])


def _record(memvir, ablation, seed, r1, epochs=8):
    return {"loss": "norm_softmax", "memvir": memvir, "ablation": ablation, "epochs": epochs,
            "seed": seed, "test": {"test/recall@1": r1 / 100, "test/map@r": r1 / 200}}


def test_ablation_rows_compare_with_default_memvir_and_the_matching_baseline():
    records = [_record(False, "", s, 90 + s) for s in (0, 1)]
    records += [_record(True, "", s, 86 + s) for s in (0, 1)]
    records += [_record(True, "N1", s, 88 + 2 * s) for s in (0, 1)]
    records += [_record(True, "const", 0, 85), _record(False, "const", 0, 89)]
    rows = quality.ablation_rows(quality.group(records))[2:]
    n1 = next(r for r in rows if " N1 " in r)
    # N1 mean 89 (std 1.41); default MemVir 86.5, baseline 90.5 (std 0.71 each)
    se = math.sqrt(2 / 2 + 0.5 / 2)
    assert "| 89.00 ± 1.41 |" in n1
    assert f"| +2.50 ± {se:.2f} | -1.50 ± {se:.2f} |" in n1
    const = next(r for r in rows if " const " in r)
    # one seed: the baseline with the same (constant-lr) setting, not the default baseline
    assert const.endswith("| -1.00 | -4.00 |")
    assert not any("baseline const" in r for r in rows)


@pytest.mark.slow
def test_tiny_benchmark_reports_the_runs_metrics(tmp_path, monkeypatch):
    import torch

    torch.set_num_threads(1)
    out, work = tmp_path / "results", tmp_path / "work"
    table = quality.main(["--tiny", "--out", str(out), "--work-dir", str(work)])

    runs = {}
    for name in ("norm_softmax-base-e1-s0", "norm_softmax-memvir-e1-s0"):
        metrics = json.loads((work / "tiny" / name / "metrics.json").read_text())
        cached = json.loads((out / "runs" / "tiny" / f"{name}.json").read_text())
        assert cached["test"] == metrics["test"]
        assert cached["best"] == metrics["best"]
        # the per-epoch curve read from the csv log holds the selected epoch's val metrics
        curve_row = next(r for r in cached["val_curve"] if r["epoch"] == metrics["best"]["epoch"])
        assert curve_row["val/map@r"] == pytest.approx(metrics["best"]["val/map@r"], abs=1e-6)
        runs[name] = metrics["test"]

    text = table.read_text()
    assert "This report: `python benchmarks/quality.py --tiny" in text
    assert f"- `python benchmarks/quality.py --tiny --out {out} --work-dir {work}`: 2 runs" in text
    assert (out / "quality_tiny_val_recall.png").stat().st_size > 1000
    for name, method in (("norm_softmax-base-e1-s0", "baseline"), ("norm_softmax-memvir-e1-s0", "MemVir")):
        row = re.search(rf"^\| NormSoftmax \| {method} \| 1 \| 1 \| 1 \| (.*)$", text, re.M)
        assert row, text
        cells = [c.strip() for c in row.group(1).split("|")]
        expected = [f"{100 * runs[name][f'test/{m}']:.2f}" for m in quality.METRICS]
        assert cells[: len(quality.METRICS)] == expected
    delta = re.search(r"^\| NormSoftmax \| equal epochs \(E=1\) \| 1/1 \| ([^|]+)\|", text, re.M)
    base, mem = runs["norm_softmax-base-e1-s0"], runs["norm_softmax-memvir-e1-s0"]
    expected_delta = 100 * mem["test/recall@1"] - 100 * base["test/recall@1"]
    assert delta and delta.group(1).strip() == f"{expected_delta:+.2f}"

    # finished runs are cached: a second call trains nothing
    monkeypatch.setattr(quality, "run_one", lambda *a, **k: pytest.fail("a cached run was retrained"))
    assert quality.main(["--tiny", "--out", str(out), "--work-dir", str(work)]).read_text() == text


def test_summary_plot_draws_every_comparison_and_ablation(tmp_path):
    records = [_record(False, "", s, 90 + s) for s in (0, 1)] + [_record(True, "", s, 86 + s) for s in (0, 1)]
    records += [_record(True, "N1", 0, 88), _record(True, "", 0, 91, epochs=16)]
    runs = tmp_path / "runs" / "glyphs_cnn"
    runs.mkdir(parents=True)
    for i, r in enumerate(records):
        (runs / f"{i}.json").write_text(json.dumps(r))
    groups = quality.group(quality.load_records(runs))
    assert [label for _, label, _, _ in quality.comparisons(groups)] == [
        "equal epochs (E=8)", "MemVir 2x longer (E=16 vs 8)"]
    path = quality.summary_plot(["glyphs_cnn", "glyphs_cjk_cnn"], tmp_path / "runs", tmp_path / "s.png")
    assert path.stat().st_size > 1000
    with pytest.raises(FileNotFoundError, match="no cached runs"):
        quality.summary_plot(["glyphs_cjk_cnn"], tmp_path / "runs", tmp_path / "t.png")


def _load_benchmark(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_memvir_drift_measures_stale_proxies_against_current_ones():
    import torch

    from memvir_pl.memory import VirtualClassMemory

    drift = _load_benchmark("memvir_drift")
    current = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])  # nearest others: cos 0.6, 0.8, 0.8
    memory = VirtualClassMemory(num_steps=2, step_gap=0)
    angle = torch.tensor(0.5)
    rotation = torch.stack([torch.stack([angle.cos(), -angle.sin()]), torch.stack([angle.sin(), angle.cos()])])
    # pushed oldest first: proxies rotated by 2θ, then by θ (the newest is one step old)
    for turns in (2, 1):
        proxies = current @ torch.linalg.matrix_power(rotation, turns).T
        embeddings = current[[0, 1]]  # rows of classes 0 and 1, each exactly on its own current proxy
        memory.push(embeddings, torch.tensor([0, 1]), proxies, normalize=True)
    checkpoint = {"epoch": 3, "global_step": 7, "state_dict": {"loss.proxies": current},
                  "callbacks": {"MemVirCallback": {"memory": memory.state_dict()}}}
    stats = drift.drift(checkpoint)
    assert stats["blocks"] == 2 and stats["classes"] == 3
    assert stats["own_copy_cos"] == pytest.approx([math.cos(0.5), math.cos(1.0)], abs=1e-6)
    assert stats["nearest_other_cos"] == pytest.approx((0.6 + 0.8 + 0.8) / 3, abs=1e-6)
    assert stats["stale_rows_nearest_own"] == 1.0
    with pytest.raises(ValueError, match="no MemVirCallback state"):
        drift.drift({"callbacks": {}, "state_dict": {"loss.proxies": current}})
