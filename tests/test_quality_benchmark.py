"""Smoke test of benchmarks/quality.py: a tiny grid, its table checked against the runs' metrics.json."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))  # the quality_bench package, as when quality.py runs

from quality_bench import plan, report, runner, stats  # noqa: E402
from quality_bench.grid import grid  # noqa: E402
from quality_bench.regimes import (  # noqa: E402
    METRICS,
    REGIMES,
    ablation_overrides,
    last_wins,
    memvir_settings,
    scaled_memvir,
)


def _load_quality():
    spec = importlib.util.spec_from_file_location("quality", REPO / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


quality = _load_quality()


def test_difference_is_welch_standard_error():
    a, b = [80.0, 82.0, 84.0], [78.0, 79.0]
    # by hand: means 82 and 78.5; variances 4 and 0.5 -> SE = sqrt(4/3 + 0.5/2)
    diff, se = stats.difference(a, b)
    assert diff == pytest.approx(3.5)
    assert se == pytest.approx(math.sqrt(4 / 3 + 0.25))
    assert math.isnan(stats.difference([1.0], [2.0, 3.0])[1])


def test_grid_orders_main_runs_before_ablations_and_names_them_uniquely():
    regime = REGIMES["glyphs_cnn"]
    specs = grid(regime, ["norm_softmax"], [0, 1], ["N1"], ["equal", "long"])
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
        grid(regime, ["norm_softmax"], [0], ["N99"], ["equal"])
    # --arms limits the plain runs (both budgets), not the ablations
    base_only = grid(regime, ["norm_softmax"], [0], ["N1"], ["equal", "long"], arms=["base"])
    assert [s.name for s in base_only] == [
        f"norm_softmax-base-e{e}-s0", f"norm_softmax-base-e{2 * e}-s0", f"norm_softmax-memvir-N1-e{e}-s0"]
    with pytest.raises(ValueError, match="unknown arm"):
        grid(regime, ["norm_softmax"], [0], [], ["equal"], arms=["baseline"])
    # a training-setting ablation runs in both arms; regime MemVir overrides reach MemVir only
    cjk = REGIMES["glyphs_cjk_cnn"]
    both = grid(cjk, ["norm_softmax"], [0], ["const"], ["equal"])
    assert [s.name for s in both[2:]] == ["norm_softmax-memvir-const-e4-s0", "norm_softmax-base-const-e4-s0"]
    assert "module.lr_schedule=constant" in both[-1].overrides(cjk)
    assert "memvir.warmup_epochs=1" in both[1].overrides(cjk)
    assert "memvir.warmup_epochs=1" not in both[0].overrides(cjk)
    # every trained run evaluates the test split at each validation
    assert all(any("SplitEvaluation" in o for o in s.overrides(regime)) for s in specs)


def test_an_ablation_that_changes_nothing_in_its_arm_reuses_the_plain_run(tmp_path, capsys):
    # (v)'s MemVir arm already trains at a constant lr, so MemVir `const` is the plain MemVir
    # run; its baseline `const` is a new run
    regime = REGIMES["emoji_effnet_few"]
    memvir_const, base_const = grid(regime, ["norm_softmax"], [1], ["const"], ["equal"])[-2:]
    assert (memvir_const.name, memvir_const.same_as) == ("norm_softmax-memvir-const-e20-s1", "norm_softmax-memvir-e20-s1")
    assert base_const.same_as == "" and not any(s.same_as for s in grid(regime, ["norm_softmax"], [1], ["N1"], ["equal"]))
    # the runner trains nothing for it: it waits for the plain record, then copies it
    runner.run_grid("x", [memvir_const], regime, tmp_path / "work", tmp_path, "cmd")
    assert "not cached yet" in capsys.readouterr().out and not list(tmp_path.glob("*.json"))
    plain = {"name": "norm_softmax-memvir-e20-s1", "loss": "norm_softmax", "memvir": True, "epochs": 20, "seed": 1,
             "ablation": "", "test": {"test/recall@1": 0.5}, "command": "first"}
    (tmp_path / "norm_softmax-memvir-e20-s1.json").write_text(json.dumps(plain))
    runner.run_grid("x", [memvir_const], regime, tmp_path / "work", tmp_path, "cmd")
    copy = json.loads((tmp_path / "norm_softmax-memvir-const-e20-s1.json").read_text())
    assert copy == {**plain, "name": memvir_const.name, "ablation": "const", "same_as": plain["name"], "command": "cmd"}
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").glob("norm_softmax-*"))
    assert "MemVir const (seeds 1): the same configuration as MemVir" in report.same_as_lines([copy])[0]


def test_ablations_can_run_at_the_longer_budget_and_pair_like_the_plain_runs(tmp_path):
    # (v) at 2E: the baseline at MemVir's constant lr (`const`) beside MemVir (its `const` run is
    # the plain MemVir run, recorded under both names)
    few = REGIMES["emoji_effnet_few"]
    specs = grid(few, ["norm_softmax"], [2], ["const"], ["equal"], ["long"])
    assert [(s.name, s.same_as) for s in specs[3:]] == [
        ("norm_softmax-memvir-const-e40-s2", "norm_softmax-memvir-e40-s2"), ("norm_softmax-base-const-e40-s2", "")]
    assert [o for o in last_wins(*specs[-1].overrides(few)) if o.startswith("module.lr_schedule=")] == [
        "module.lr_schedule=constant"]
    assert len(grid(few, ["norm_softmax"], [2], ["const"], ["equal"], ["equal", "long"])) == 3 + 4
    with pytest.raises(ValueError, match="unknown budget 'triple'"):
        grid(few, ["norm_softmax"], [0], ["const"], ["equal"], ["triple"])
    assert quality.parse_args(["--ablation-budgets", "long"]).ablation_budgets == ["long"]
    # the const arms pair at E, at 2E and MemVir 2E vs baseline E, like the plain runs
    def every_metric(r):  # each metric = R@1
        return {**r, "test": {f"test/{m}": r["test"]["test/recall@1"] for m in METRICS}}

    records = [every_metric(_record(True, "const", s, 86 + s, epochs=e)) for s in (0, 1) for e in (8, 16)]
    records += [every_metric(_record(False, "const", s, 90 + 2 * s, epochs=8)) for s in (0, 1)]
    records += [every_metric(_record(False, "const", s, 91, epochs=16)) for s in (0, 1)]
    groups = stats.group(records)
    assert stats.comparisons(groups) == []
    rows = report.comparison_rows(groups, "const")[2:]
    # E=8: 86.5 - 91 = -4.5, SE sqrt(.5/2 + 2/2); E=16: 86.5 - 91 (SE sqrt(.5/2)); 2x: 86.5 - 91 again
    assert [r.split(" | ")[1:4] for r in rows] == [
        ["equal epochs (E=8)", "2/2", f"-4.50 ± {math.sqrt(0.25 + 1):.2f}"],
        ["equal epochs (E=16)", "2/2", f"-4.50 ± {math.sqrt(0.25):.2f}"],
        ["MemVir 2x longer (E=16 vs 8)", "2/2", f"-4.50 ± {math.sqrt(0.25 + 1):.2f}"]]
    cache = tmp_path / "runs"
    cache.mkdir()
    for i, r in enumerate(records):
        (cache / f"{i}.json").write_text(json.dumps({**r, "seconds": 60, "best": {"epoch": 1},
                                                            "val_curve": [{"epoch": 1, "val/recall@1": 0.5}]}))
    text = report.write_report("emoji_effnet_few", few, cache, tmp_path, "cmd").read_text()
    assert "## MemVir − baseline `const`" in text and "| MemVir 2x longer (E=16 vs 8) | 2/2 | -4.50" in text


def test_emoji_regimes_scale_the_official_settings():
    # (v), CARS-like: the zero-shot row first (no training overrides); the baseline's step decay
    # at 50/130 of its own epochs; MemVir N scaled to 8 steps per epoch, M kept; Proxy-NCA's own N, M
    few = REGIMES["emoji_effnet_few"]
    specs = grid(few, ["norm_softmax", "proxy_nca"], [0], [], ["equal", "long"])
    assert specs[0].name == "zero_shot" and not any("loss=" in o for o in specs[0].overrides(few))
    assert "+trainer.limit_train_batches=8" in specs[0].overrides(few)
    by_name = {s.name: s.overrides(few) for s in specs}
    assert by_name["norm_softmax-base-e20-s0"][-3:] == [
        "module.lr_schedule=step", "module.lr_decay_step=8", "module.lr_decay_stop=8"]  # 50/130 x 20 = 7.7
    assert "module.lr_decay_step=15" in by_name["norm_softmax-base-e40-s0"]  # 50/130 x 40 = 15.4
    # official span 45 x 11 / 63 = 7.86 epochs = 62.9 steps at 8 a epoch: N = 62.9 / 11 = 5.7 -> 6
    assert by_name["norm_softmax-memvir-e20-s0"][-4:] == [
        "module.lr_schedule=constant", "memvir.num_steps=6", "memvir.step_gap=10", "memvir.warmup_epochs=6"]
    # Proxy-NCA: 20 x 26 / 63 x 8 / 26 = 2.54 -> N=3, M=25 (replacing the NormSoftmax values)
    assert by_name["proxy_nca-memvir-e20-s0"][-4:] == [
        "module.lr_schedule=constant", "memvir.num_steps=3", "memvir.step_gap=25", "memvir.warmup_epochs=6"]
    # (iv), SOP-like: N=5 kept, M+1 = 5 x 101 / 465 x 40 / 5 = 8.7 -> M = 8
    sop = REGIMES["emoji_effnet"]
    assert grid(sop, ["norm_softmax"], [0], [], ["equal"])[2].overrides(sop)[-3:] == [
        "memvir.num_steps=5", "memvir.step_gap=8", "memvir.warmup_epochs=1"]
    assert scaled_memvir(45, 10, 63, 63) == (45, 10) == scaled_memvir(45, 10, 63, 63, keep="steps")
    assert scaled_memvir(45, 10, 63, 1) == (1, 10) and scaled_memvir(45, 10, 63, 1, keep="steps") == (45, 0)
    with pytest.raises(ValueError, match="keep must be"):
        scaled_memvir(45, 10, 63, 8, keep="both")
    assert last_wins("a=1", "b=2", "a=3") == ("a=3", "b=2")


def test_few_character_glyphs_train_memvir_at_a_constant_lr_without_a_test_curve():
    """(i-b): the baseline keeps the config's cosine decay, MemVir and its parts train at a constant lr and
    are compared with the baseline at that lr; only the emoji regimes evaluate the test split every epoch."""
    from quality_bench.regimes import TEST_CURVE

    few = REGIMES["glyphs_cnn_few"]
    by_name = {s.name: s for s in grid(few, ["norm_softmax"], [0], ["const", "virtual_proxies-N10-M5"], ["equal"])}
    assert "module.lr_schedule=constant" not in by_name["norm_softmax-base-e40-s0"].overrides(few)
    assert "module.lr_schedule=constant" in by_name["norm_softmax-memvir-virtual_proxies-N10-M5-e40-s0"].overrides(few)
    assert by_name["norm_softmax-memvir-const-e40-s0"].same_as == "norm_softmax-memvir-e40-s0"
    assert few.ablation_baseline == "const"
    assert not any(TEST_CURVE in s.overrides(few) for s in by_name.values())
    frozen = REGIMES["emoji_frozen"]
    assert all(TEST_CURVE in s.overrides(frozen) for s in grid(frozen, ["norm_softmax"], [0], [], ["equal"])[1:])


def _record(memvir, ablation, seed, r1, epochs=8):
    return {"loss": "norm_softmax", "memvir": memvir, "ablation": ablation, "epochs": epochs,
            "seed": seed, "test": {"test/recall@1": r1 / 100, "test/map@r": r1 / 200}}


def _rule_record(loss, memvir, ablation, seed, r1, map_r, epochs, val=0.3):
    return {"loss": loss, "memvir": memvir, "ablation": ablation, "epochs": epochs, "seed": seed,
            "test": {"test/recall@1": r1 / 100, "test/map@r": map_r / 100},
            "best": {"val/map@r": val, "val/recall@1": val, "epoch": epochs}}


def test_the_rule_compares_each_part_with_the_same_lr_baseline_and_reads_mean_and_2_se(tmp_path):
    """Two regimes by hand: (vi) with the const baseline and a swept part (the setting chosen on validation,
    not the better-testing one), (iv) with the plain baseline (both arms at a constant lr). NormSoftmax: virtual proxies +1 and +0.5 R@1
    (mean +0.75), MAP@R +1 and -0.2 (-0.2 ± 0.1 is not below 0 by more than 2 SE); ProxyAnchor: +0.5 in (vi)
    only. Then ProxyAnchor's (vi) virtual proxies at -1 ± 0.2: below 0 by more than 2 SE, the rule says no."""
    from quality_bench.rule import regime_cells, rule_report, verdict

    e6, e4 = REGIMES["emoji_frozen"].epochs, REGIMES["emoji_effnet"].epochs
    assert REGIMES["emoji_frozen"].ablation_baseline == "const" and REGIMES["emoji_effnet"].ablation_baseline == ""
    vi, iv = tmp_path / "runs" / "emoji_frozen", tmp_path / "runs" / "emoji_effnet"
    vi.mkdir(parents=True)
    iv.mkdir(parents=True)
    spread = (-0.1, 0.1)  # seeds 0, 1: std 0.1414, Welch SE of a difference of two such arms 0.1414
    records = {vi: [], iv: []}
    for seed, d in enumerate(spread):
        for loss in ("norm_softmax", "proxy_anchor"):
            records[vi] += [_rule_record(loss, False, "const", seed, 50 + d, 20 + d, e6),
                            _rule_record(loss, False, "", seed, 40 + d, 15 + d, e6),  # step decay: not the reference
                            _rule_record(loss, True, "", seed, 48 + d, 19 + d, e6)]
        records[vi] += [_rule_record("norm_softmax", True, "virtual_proxies-N10-M5", seed, 51 + d, 21 + d, e6, 0.4),
                        _rule_record("norm_softmax", True, "virtual_proxies-N1-M5", seed, 60 + d, 30 + d, e6, 0.2),
                        _rule_record("proxy_anchor", True, "virtual_proxies-N10-M5", seed, 50.5 + d, 20 + d, e6, 0.4)]
        records[iv] += [_rule_record("norm_softmax", False, "", seed, 70 + d, 30 + d, e4),
                        _rule_record("norm_softmax", True, "virtual_proxies", seed, 70.5 + d, 29.8 + d, e4)]
    for folder, rs in records.items():
        for i, r in enumerate(rs):
            (folder / f"{i}.json").write_text(json.dumps(r))
    cells = {"emoji_frozen": regime_cells(REGIMES["emoji_frozen"], records[vi]),
             "emoji_effnet": regime_cells(REGIMES["emoji_effnet"], records[iv])}
    vp = cells["emoji_frozen"]["norm_softmax"]["virtual proxies"]
    assert vp.seeds == 2 and vp.baseline == pytest.approx(50) and vp.arm == pytest.approx(51)  # N10 chosen on val
    assert vp.deltas["recall@1"] == pytest.approx((1.0, 0.1414), abs=1e-3)
    assert cells["emoji_frozen"]["norm_softmax"]["MemVir"].deltas["recall@1"][0] == pytest.approx(-2.0)
    assert "virtual proxies masked" not in cells["emoji_frozen"]["norm_softmax"]
    assert cells["emoji_effnet"]["norm_softmax"]["virtual proxies"].deltas["map@r"][0] == pytest.approx(-0.2)
    v = verdict(cells, "virtual proxies")
    assert v.holds is True and v.failing == []
    assert v.means["norm_softmax"] == pytest.approx({"recall@1": 0.75, "map@r": 0.4})
    assert v.regimes["proxy_anchor"] == ["emoji_frozen"]
    assert verdict(cells, "virtual proxies masked").holds is None  # no regime has it
    assert verdict(cells, "MemVir").holds is False
    text = rule_report(["emoji_frozen", "emoji_effnet"], tmp_path / "runs", tmp_path / "rule.md", "cmd").read_text()
    assert "| virtual proxies | NormSoftmax | emoji_effnet, emoji_frozen | +0.75 | +0.40 | none | **yes** |" in text
    records[vi] = [r for r in records[vi]
                   if not (r["loss"] == "proxy_anchor" and r["ablation"].startswith("virtual_proxies"))]
    records[vi] += [_rule_record("proxy_anchor", True, "virtual_proxies-N10-M5", seed, 49 + 2 * d, 20, e6)
                    for seed, d in enumerate(spread)]
    cells["emoji_frozen"] = regime_cells(REGIMES["emoji_frozen"], records[vi])
    v = verdict(cells, "virtual proxies")
    assert v.holds is False and v.failing == ["emoji_frozen ProxyAnchor recall@1"]


def test_ablation_rows_compare_with_default_memvir_and_the_matching_baseline():
    records = [_record(False, "", s, 90 + s) for s in (0, 1)]
    records += [_record(True, "", s, 86 + s) for s in (0, 1)]
    records += [_record(True, "N1", s, 88 + 2 * s) for s in (0, 1)]
    records += [_record(True, "const", 0, 85), _record(False, "const", 0, 89)]
    rows = report.ablation_rows(stats.group(records))[2:]
    n1 = next(r for r in rows if " N1 " in r)
    # N1 mean 89 (std 1.41); default MemVir 86.5, baseline 90.5 (std 0.71 each)
    se = math.sqrt(2 / 2 + 0.5 / 2)
    assert "| 89.00 ± 1.41 |" in n1
    assert f"| +2.50 ± {se:.2f} | -1.50 ± {se:.2f} |" in n1
    const = next(r for r in rows if " const " in r)
    # one seed: the baseline with the same (constant-lr) setting, not the default baseline
    assert const.endswith("| -1.00 | -4.00 (baseline const) |")
    assert not any("baseline const" in r for r in rows if " const " not in r)


def test_a_regime_can_compare_memvir_ablations_with_a_baseline_trained_like_memvir():
    # regime (v): the plain baseline decays its lr, MemVir does not; its parts are compared
    # with the baseline at MemVir's constant lr (`const`), on the seeds both have
    assert REGIMES["emoji_effnet_few"].ablation_baseline == "const"
    records = [_record(False, "", s, 80) for s in (0, 1)] + [_record(True, "", s, 86) for s in (0, 1)]
    records += [_record(False, "const", 0, 90), _record(False, "const", 1, 92), _record(False, "const", 2, 70)]
    records += [_record(True, "virtual_proxies", s, 93 + s) for s in (0, 1)]
    groups = stats.group(records)
    rows = report.ablation_rows(groups, "const")[2:]
    vp = next(r for r in rows if " virtual_proxies " in r)
    # 93.5 vs 86 (default MemVir) and vs 91 (baseline const, seeds 0 and 1 only); SE = sqrt(.5/2 + 2/2)
    se = math.sqrt(0.5 / 2 + 2 / 2)
    assert vp.endswith(f"| +7.50 ± 0.50 | +2.50 ± {se:.2f} (baseline const) |")
    assert report.ablation_rows(groups)[2:][0].endswith("| +13.50 ± 0.50 |")


def _audited(memvir, epochs, seed, selected, curve):
    """A record whose test (and per-epoch test curve) has R@1 and MAP@R = R-Precision, in %."""
    def metrics(r1, mapr):
        return {"test/recall@1": r1 / 100, "test/r_precision": mapr / 100, "test/map@r": mapr / 100}
    return {"loss": "norm_softmax", "memvir": memvir, "ablation": "", "epochs": epochs, "seed": seed,
            "test": metrics(*selected),
            "test_curve": [{"epoch": 2 * (i + 1), **metrics(*row)} for i, row in enumerate(curve)]}


def test_protocol_audit_on_a_hand_worked_example():
    records = [
        # baseline E=10: (a) R@1 80, 82 -> 81; (b) 82, 82 -> 82. MAP@R best at another epoch than R@1
        _audited(False, 10, 0, (80, 45), [(78, 40), (80, 45), (82, 41)]),
        _audited(False, 10, 1, (82, 44), [(82, 44), (81, 43)]),
        # MemVir E=10: (a) 79, 77 -> 78; (b) 83, 79 -> 81
        _audited(True, 10, 0, (79, 40), [(79, 40), (83, 42)]),
        _audited(True, 10, 1, (77, 40), [(77, 40), (79, 41)]),
        # MemVir E=20: (a) 84, 82 -> 83; (b) 86, 85 -> 85.5
        _audited(True, 20, 0, (84, 50), [(80, 48), (84, 50), (86, 49)]),
        _audited(True, 20, 1, (82, 50), [(85, 51), (82, 50)]),
        {**_record(False, "", 2, 99, epochs=10)},  # no test curve (an early run): not audited
    ]
    assert len(stats.audited(records)) == 6
    groups = stats.group(stats.audited(records))
    assert stats.best_test(records[0], "recall@1") == pytest.approx(82)  # per metric on its own:
    assert stats.best_test(records[0], "map@r") == pytest.approx(45)  # epoch 4, not R@1's epoch 6
    # ours -3 (78 - 81); budget: MemVir at 2E, (a): 83 - 81 = +2, i.e. +5; protocol: (b) at 2E vs E
    # 85.5 - 82 = +3.5, i.e. +1.5 over (a); official +3.5 = -3 + 5 + 1.5
    assert tuple(stats.decompose(groups, "norm_softmax", 10, "recall@1")) == pytest.approx((-3, 5, 1.5, 3.5))
    # MAP@R: base (a) 44.5, (b) 44.5; MemVir E (a) 40, E2 (a) 50, (b) 50.5: -4.5, +10, +0.5, +6
    assert tuple(stats.decompose(groups, "norm_softmax", 10, "map@r")) == pytest.approx((-4.5, 10, 0.5, 6))
    assert stats.decompose(groups, "norm_softmax", 20, "recall@1") is None  # no baseline at 20
    # (b) - (a) of the baseline: R@1 (2, 0) -> mean 1, std sqrt(2)
    assert stats.protocol_gain(groups[("norm_softmax", False, "", 10)], "recall@1") == pytest.approx((1, math.sqrt(2)))

    rows = report.audit_rows(groups)
    # equal epochs, (b): MemVir (83, 79) vs baseline (82, 82): -1 ± sqrt(8/2 + 0)
    equal_b = next(r for r in rows if "equal epochs (E=10) | (b)" in r)
    assert "| 2/2 | -1.00 ± 2.00 |" in equal_b
    long_a = next(r for r in rows if "2x longer (E=20 vs 10) | (a)" in r)
    assert "| 2/2 | +2.00 ± 1.41 |" in long_a  # (84, 82) vs (80, 82): SE sqrt(2/2 + 2/2)
    section = "\n".join(report.audit_section(records))
    assert "6 of 7 runs" in section
    assert "| NormSoftmax | 10 | recall@1 | -3.00 | +5.00 | +1.50 | +3.50 |" in section
    assert report.audit_section([_record(False, "", 0, 90)]) == []


def test_read_curves_and_repo_relative_paths(tmp_path):
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text(
        "epoch,step,train/loss,val/map@r,val/recall@1,test_during_fit/map@r,test_during_fit/recall@1\n"
        ",9,1.5,,,,\n"  # a step row without an epoch
        "1,19,,0.3,0.6,0.2,0.5\n"
        "3,39,,0.4,0.7,0.25,0.55\n")
    val, test = runner.read_curves(tmp_path)
    assert val == [{"epoch": 2, "val/map@r": 0.3, "val/recall@1": 0.6},
                   {"epoch": 4, "val/map@r": 0.4, "val/recall@1": 0.7}]
    assert test == [{"epoch": 2, "test/map@r": 0.2, "test/recall@1": 0.5},
                    {"epoch": 4, "test/map@r": 0.25, "test/recall@1": 0.55}]
    assert runner.repo_relative(REPO / "benchmarks" / "quality_work" / "x") == "benchmarks/quality_work/x"
    assert runner.repo_relative(tmp_path) == str(tmp_path)  # outside the repository: as given


def test_committed_run_records_hold_no_absolute_paths():
    for path in (REPO / "benchmarks" / "results" / "runs").glob("*/*.json"):
        record = json.loads(path.read_text())
        for key in ("run_dir", "test_checkpoint"):
            assert not str(record.get(key) or "").startswith("/"), (path, key, record[key])


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
        assert cached["cpu"] == runner.cpu_model() and cached["cpu"]  # the machine its minutes were timed on
        # the per-epoch curve read from the csv log holds the selected epoch's val metrics
        curve_row = next(r for r in cached["val_curve"] if r["epoch"] == metrics["best"]["epoch"])
        assert curve_row["val/map@r"] == pytest.approx(metrics["best"]["val/map@r"], abs=1e-6)
        # the test split evaluated during fit (SplitEvaluation) at the selected epoch equals
        # trainer.test of that epoch's checkpoint (DMLModule.test_step): the same number two ways
        (test_row,) = cached["test_curve"]
        assert test_row["epoch"] == metrics["best"]["epoch"] == 1
        for m in ("recall@1", "recall@8", "r_precision", "map@r"):
            assert test_row[f"test/{m}"] == pytest.approx(metrics["test"][f"test/{m}"], abs=1e-6)
        runs[name] = metrics["test"]
    zero_shot = json.loads((out / "runs" / "tiny" / "zero_shot.json").read_text())
    assert zero_shot["epochs"] == 0 and zero_shot["test_curve"][0]["test/recall@1"] == zero_shot["test"]["test/recall@1"]
    assert 0 < zero_shot["best"]["val/recall@1"] <= 1

    text = table.read_text()
    assert "This report: `python benchmarks/quality.py --tiny" in text
    assert f"- `python benchmarks/quality.py --tiny --out {out} --work-dir {work}`: 3 runs" in text
    assert (out / "quality_tiny_val_recall.png").stat().st_size > 1000
    for name, method in (("norm_softmax-base-e1-s0", "baseline"), ("norm_softmax-memvir-e1-s0", "MemVir")):
        row = re.search(rf"^\| NormSoftmax \| {method} \| 1 \| 1 \| 1 \| (.*)$", text, re.M)
        assert row, text
        cells = [c.strip() for c in row.group(1).split("|")]
        expected = [f"{100 * runs[name][f'test/{m}']:.2f}" for m in METRICS]
        assert cells[: len(METRICS)] == expected
    assert re.search(r"^\| none \(ImageNet pooled features\) \| zero-shot \| 0 \| 1 \| 0 \| ", text, re.M)
    delta = re.search(r"^\| NormSoftmax \| equal epochs \(E=1\) \| 1/1 \| ([^|]+)\|", text, re.M)
    base, mem = runs["norm_softmax-base-e1-s0"], runs["norm_softmax-memvir-e1-s0"]
    expected_delta = 100 * mem["test/recall@1"] - 100 * base["test/recall@1"]
    assert delta and delta.group(1).strip() == f"{expected_delta:+.2f}"
    assert "## Protocol audit" in text and "3 of 3 runs" in text

    # finished runs are cached: a second call trains nothing
    monkeypatch.setattr(runner, "run_one", lambda *a, **k: pytest.fail("a cached run was retrained"))
    assert quality.main(["--tiny", "--out", str(out), "--work-dir", str(work)]).read_text() == text


def test_plan_predicts_training_and_both_evaluations():
    # 160 steps of 2 s; 2 validations of val + test (2,000 + 5,000 images) and the final test
    # (5,000) at 6 ms per image: 320 + 0.006 x 19,000 = 434 s
    assert plan.predicted_seconds(160, 2.0, 2, 2000, 5000, 0.006) == pytest.approx(434)
    assert plan.predicted_seconds(160, 2.0, 2, 2000, 5000, 0.006, test_curve=False) == pytest.approx(374)


@pytest.mark.slow
def test_plan_measures_the_regime_on_its_data(tmp_path):
    import torch

    torch.set_num_threads(1)
    text = quality.main(["--tiny", "--plan", "--out", str(tmp_path / "results"), "--work-dir", str(tmp_path / "w")])
    sizes = re.search(r"images train/val/test: (\d+)/(\d+)/(\d+); training batches of 32: (\d+) "
                      r"\(the regime's epoch: 3 steps\)", text)
    assert sizes and int(sizes.group(4)) >= 3, text  # the class-balanced sampler sets the batches
    step = float(re.search(r"training step ([\d.]+) s", text).group(1))
    ms = float(re.search(r"evaluation ([\d.]+) ms per image", text).group(1))
    minutes = float(re.search(r"E=1: 3 steps, predicted ([\d.]+) min", text).group(1))
    val, test = int(sizes.group(2)), int(sizes.group(3))
    expected = plan.predicted_seconds(3, step, 1, val, test, ms / 1000) / 60
    assert minutes == pytest.approx(expected, abs=0.06)  # the printed figures are rounded


@pytest.mark.parametrize(("name", "data"), [("emoji_effnet", "emoji"), ("emoji_effnet_few", "emoji_few")])
def test_emoji_regimes_compose_with_the_emoji_data_configs(tmp_path, name, data):
    from memvir_pl.config import CONFIG_DIR, compose_config

    if not (CONFIG_DIR / "data" / f"{data}.yaml").is_file():
        pytest.skip(f"conf/data/{data}.yaml not there")
    regime = REGIMES[name]
    for spec in grid(regime, ["norm_softmax", "proxy_anchor", "proxy_nca"], [0], [], ["equal", "long"]):
        cfg = compose_config(spec.overrides(regime), tmp_path)
        assert (cfg.model.freeze_stages, cfg.data.image_size, cfg.data.m_per_class) == (4, 48, None)


def _miniature(regime, data: str):
    """``regime`` on the glyph Latin subset instead of ``data``: 2 epochs of 2 steps of 32,
    validated after the second, MemVir on from the first step."""
    stand_in = ("data=glyphs", "data.options.chars='U+0041-U+005A, U+0061-U+007A'", "data.batch_size=32")
    overrides = tuple(o for o in regime.overrides if o != f"data={data}")
    assert len(overrides) == len(regime.overrides) - 1, regime.overrides
    return dataclasses.replace(regime, overrides=last_wins(*stand_in, *overrides, "check_every=2"), epochs=2,
                               steps_per_epoch=2, loss_memvir_overrides={},
                               memvir_overrides=last_wins(*regime.memvir_overrides, *memvir_settings(1, 0, 0)))


@pytest.mark.slow
def test_emoji_regime_end_to_end_on_the_glyph_stand_in(tmp_path):
    """Regime (v)'s model and protocol (EfficientNet-Lite0 ImageNet weights, frozen stages, the
    baseline's step decay and MemVir's constant lr, the zero-shot row) run end to end on glyphs;
    regime (iv) differs only in its overrides (composed above)."""
    import torch

    torch.set_num_threads(1)
    name = "emoji_effnet_few"
    regime = _miniature(REGIMES[name], "emoji_few")
    work, cache = tmp_path / "work" / name, tmp_path / "runs" / name
    runner.run_grid(name, grid(regime, ["norm_softmax"], [0], [], ["equal"]), regime, work, cache, "test")
    records = {r["name"]: r for r in runner.load_records(cache)}
    assert set(records) == {"zero_shot", "norm_softmax-base-e2-s0", "norm_softmax-memvir-e2-s0"}
    for run in ("norm_softmax-base-e2-s0", "norm_softmax-memvir-e2-s0"):
        assert [row["epoch"] for row in records[run]["test_curve"]] == [2]
        assert "model.freeze_stages=4" in records[run]["overrides"]
    assert "module.lr_schedule=constant" in records["norm_softmax-memvir-e2-s0"]["overrides"]
    assert "module.lr_schedule=step" in records["norm_softmax-base-e2-s0"]["overrides"]
    assert 0 < records["zero_shot"]["test"]["test/recall@1"] <= 1
    text = report.write_report(name, regime, cache, tmp_path / "results", "test").read_text()
    assert "| none (ImageNet pooled features) | zero-shot | 0 |" in text


def test_summary_plot_draws_every_comparison_and_ablation(tmp_path):
    records = [_record(False, "", s, 90 + s) for s in (0, 1)] + [_record(True, "", s, 86 + s) for s in (0, 1)]
    records += [_record(True, "N1", 0, 88), _record(True, "", 0, 91, epochs=16)]
    runs = tmp_path / "runs" / "glyphs_cnn"
    runs.mkdir(parents=True)
    for i, r in enumerate(records):
        (runs / f"{i}.json").write_text(json.dumps(r))
    groups = stats.group(runner.load_records(runs))
    assert [c.label for c in stats.comparisons(groups)] == [
        "equal epochs (E=8)", "MemVir 2x longer (E=16 vs 8)"]
    path = report.summary_plot(["glyphs_cnn", "glyphs_cjk_cnn"], tmp_path / "runs", tmp_path / "s.png")
    assert path.stat().st_size > 1000
    with pytest.raises(FileNotFoundError, match="no cached runs"):
        report.summary_plot(["glyphs_cjk_cnn"], tmp_path / "runs", tmp_path / "t.png")


def _load_benchmark(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("store_rows", "store_proxies"), [(True, True), (True, False), (False, True)])
def test_memvir_drift_measures_stale_proxies_against_current_ones(tmp_path, store_rows, store_proxies):
    import torch

    from memvir_pl.memory import VirtualClassMemory

    drift = _load_benchmark("memvir_drift")
    current = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])  # nearest others: cos 0.6, 0.8, 0.8
    # a memory of parts "full", "memory_rows" (no snapshots) or "virtual_proxies" (no rows)
    memory = VirtualClassMemory(num_steps=2, step_gap=0, store_rows=store_rows, store_proxies=store_proxies)
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
    cosines = [math.cos(0.5), math.cos(1.0)] if store_proxies else []
    assert stats["own_copy_cos"] == pytest.approx(cosines, abs=1e-6)
    assert stats["nearest_other_cos"] == pytest.approx((0.6 + 0.8 + 0.8) / 3, abs=1e-6)
    if store_rows:
        assert stats["stale_rows_nearest_own"] == 1.0
    else:
        assert math.isnan(stats["stale_rows_nearest_own"])
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save({**checkpoint, "memvir_pl_config": {}}, path)
    row = drift.report([path], "cmd").splitlines()[-1]
    cosines = f"{math.cos(0.5):.4f} / {math.cos(1.0):.4f}" if store_proxies else "– (no proxy snapshots)"
    assert row == f"| run | last.ckpt | 3 | 7 | 2 | {cosines} | 0.7333 | {'100.0 %' if store_rows else '–'} |"
    with pytest.raises(ValueError, match="no MemVirCallback state"):
        drift.drift({"callbacks": {}, "state_dict": {"loss.proxies": current}})


@pytest.mark.parametrize("loss_name", ["norm_softmax", "proxy_nca"])
def test_own_copy_push_equals_a_loop_over_rows_and_follows_the_proxys_motion(loss_name):
    """The push of c's old proxies on a row, computed for the batch, equals a loop that differentiates each
    row's own loss with and without its own-class logits (these losses are means of per-row terms); and a
    row on its class's proxy, whose proxy moved along u since the snapshot, is pushed along u."""
    import torch
    import torch.nn.functional as F

    from memvir_pl.losses import NormSoftmax, ProxyNCA

    drift = _load_benchmark("memvir_drift")
    torch.manual_seed(0)
    num_classes, dim, batch = 4, 6, 10
    loss = {"norm_softmax": NormSoftmax, "proxy_nca": ProxyNCA}[loss_name](num_classes, dim)
    blocks = [F.normalize(loss.proxies.detach() + 0.3 * torch.randn(num_classes, dim), dim=1) for _ in range(2)]
    rows, labels = torch.randn(batch, dim), torch.randint(0, num_classes, (batch,))
    stats = drift.push_statistics(loss, rows, labels, blocks)
    proxies = torch.cat([loss.proxies.detach(), *blocks]).double()
    motion_cos, own_cos, share = [], [], []
    for i in range(batch):
        row = rows[i:i + 1].double().requires_grad_(True)
        keep = [p for p in range(3 * num_classes) if p == labels[i] or p % num_classes != labels[i]]
        whole = torch.autograd.grad(loss.compute(row, labels[i:i + 1], proxies, 3 * num_classes), row)[0][0]
        masked_logits = torch.full((1, 3 * num_classes), True)
        masked_logits[0, keep] = False
        masked = torch.autograd.grad(loss.compute(row, labels[i:i + 1], proxies, 3 * num_classes,
                                                  logit_mask=masked_logits), row)[0][0]
        push, unit = masked - whole, F.normalize(rows[i].double(), dim=0)

        def tangent(v, unit=unit):
            return v - (v @ unit) * unit

        own = F.normalize(loss.proxies.detach()[labels[i]].double(), dim=0)
        motion = own - F.normalize(blocks[0][labels[i]].double(), dim=0)
        motion_cos.append(F.cosine_similarity(tangent(push), tangent(motion), dim=0))
        own_cos.append(F.cosine_similarity(tangent(push), tangent(own), dim=0))
        share.append(push.norm() / whole.norm())
    assert stats["rows"] == batch
    assert stats["push_motion_cos"] == pytest.approx(torch.stack(motion_cos).mean().item(), abs=1e-9)
    assert stats["push_own_cos"] == pytest.approx(torch.stack(own_cos).mean().item(), abs=1e-9)
    assert stats["push_share"] == pytest.approx(torch.stack(share).mean().item(), rel=1e-9)
    # hand-worked geometry: class 0's proxy e0 moved from cos(0.3) e0 - sin(0.3) e1 to e0; a row at e0
    # is pushed away from the old position, i.e. along +e1, the way its proxy moved
    with torch.no_grad():
        loss.proxies.copy_(torch.eye(num_classes, dim))
    old = torch.eye(num_classes, dim)
    old[0] = torch.tensor([math.cos(0.3), -math.sin(0.3), 0, 0, 0, 0])
    row = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0, 0.01]])
    geometry = drift.push_statistics(loss, row, torch.tensor([0]), [old])
    assert geometry["push_motion_cos"] > 0.99


def test_a_part_with_its_own_n_and_m_is_an_ablation_of_every_loss_at_the_regimes_long_budget():
    assert ablation_overrides("virtual_proxies-N3-M20") == [
        "memvir.parts=virtual_proxies", "memvir.num_steps=3", "memvir.step_gap=20"]
    assert ablation_overrides("full-N45-M10") == ["memvir.num_steps=45", "memvir.step_gap=10"]
    assert ablation_overrides("const") == ["module.lr_schedule=constant"]
    with pytest.raises(ValueError, match="e.g. virtual_proxies-N3-M20"):
        ablation_overrides("virtual_proxies-N3")
    # ablations joined by + apply in order, each resolved as alone
    assert ablation_overrides("virtual_proxies-N3-M20+real_negatives") == [
        "memvir.parts=virtual_proxies", "memvir.num_steps=3", "memvir.step_gap=20", "loss.negative_mean=real_proxies"]
    with pytest.raises(ValueError, match="unknown ablation 'nope'"):
        ablation_overrides("const+nope")
    regime = dataclasses.replace(REGIMES["glyphs_cnn"], long_factor=5)
    specs = grid(regime, ["norm_softmax", "proxy_anchor"], [0], ["virtual_proxies_masked-N1-M4"], [], ["equal", "long"])
    assert [s.name for s in specs] == [
        "norm_softmax-memvir-virtual_proxies_masked-N1-M4-e8-s0", "proxy_anchor-memvir-virtual_proxies_masked-N1-M4-e8-s0",
        "norm_softmax-memvir-virtual_proxies_masked-N1-M4-e40-s0", "proxy_anchor-memvir-virtual_proxies_masked-N1-M4-e40-s0"]
    assert {"loss=proxy_anchor", "memvir.parts=virtual_proxies_masked", "memvir.num_steps=1",
            "memvir.step_gap=4", "trainer.max_epochs=40"} <= set(specs[-1].overrides(regime))
    # the long budget pairs MemVir at 5E with the baseline at E
    records = [_record(True, "", s, 80 + s, epochs=40) for s in (0, 1)] + [_record(False, "", s, 81, epochs=8)
                                                                          for s in (0, 1)]
    assert [c.label for c in stats.comparisons(stats.group(records), long_factor=5)] == ["MemVir 5x longer (E=40 vs 8)"]


def _curved(memvir, ablation, seed, val_map_r, seconds=600.0, epochs=40, loss="norm_softmax"):
    """A record whose val MAP@R per validated epoch (every 10) is ``val_map_r`` (%), the best chosen."""
    curve = [{"epoch": 10 * (i + 1), "val/map@r": v / 100, "val/recall@1": (v + 30) / 100}
             for i, v in enumerate(val_map_r)]
    best = max(curve, key=lambda row: row["val/map@r"])
    return {"loss": loss, "memvir": memvir, "ablation": ablation, "epochs": epochs, "seed": seed,
            "seconds": seconds, "val_curve": curve, "best": best,
            "test": {f"test/{m}": 0.5 for m in METRICS}}


def test_settings_are_chosen_on_validation_and_time_to_the_baselines_target_is_reported(tmp_path):
    records = [_curved(True, "virtual_proxies-N1-M4", 0, [20, 22, 23, 22]),
               _curved(True, "virtual_proxies-N3-M4", 0, [21, 24, 23, 23]),
               _curved(True, "virtual_proxies-N3-M4", 1, [30, 30, 30, 30]),  # seed 1: not in the sweep
               _curved(True, "virtual_proxies_masked-N3-M4", 0, [10, 11, 12, 13])]
    records += [_curved(False, "const", s, [18, 20, 21, 22 + s]) for s in (0, 1)]
    scores = stats.sweep_scores(stats.group(records), lambda a: "-N" in a)
    assert [(s.setting, s.budget, s.seeds, s.val_map_r[0], s.selected) for s in scores] == [
        ("virtual_proxies-N1-M4", 40, (0,), pytest.approx(23.0), (30,)),
        ("virtual_proxies-N3-M4", 40, (0,), pytest.approx(24.0), (20,)),
        ("virtual_proxies_masked-N3-M4", 40, (0,), pytest.approx(13.0), (40,))]
    assert stats.chosen_settings(scores) == {"norm_softmax/virtual_proxies-N3-M4/40",
                                             "norm_softmax/virtual_proxies_masked-N3-M4/40"}
    rows = report.sweep_rows(scores, stats.chosen_settings(scores))[2:]
    assert rows[1].endswith("| 40 | 0 | 24.00 | 54.00 | 20 | **yes** |") and rows[0].endswith("| 30 |  |")
    # each budget chooses on its own runs: at 80 epochs N1 wins
    longer = [_curved(True, "virtual_proxies-N1-M4", 0, [20, 30], epochs=80),
              _curved(True, "virtual_proxies-N3-M4", 0, [20, 25], epochs=80)]
    assert stats.chosen_settings(stats.sweep_scores(stats.group(records + longer), lambda a: "-N" in a)) == {
        "norm_softmax/virtual_proxies-N3-M4/40", "norm_softmax/virtual_proxies_masked-N3-M4/40",
        "norm_softmax/virtual_proxies-N1-M4/80"}
    # target: 99 % of the const baseline's best val MAP@R (22 and 23: mean 22.5) = 22.275
    records[0]["cpu"] = "Test CPU 9000"  # runs keep the CPU they were timed on; older records do not
    sooner = report.sooner_rows(stats.group(records), "const")[2:]
    n3 = next(r for r in sooner if "virtual_proxies-N3-M4 " in r)
    # seed 0 reaches it at epoch 20 (15 of 40 epochs' 10 minutes: 5.0), seed 1 at epoch 10 (2.5)
    assert "| 22.27 | 2/2 | 15.00 ± 7.07 | 3.75 ± 1.77 |" in n3
    assert next(r for r in sooner if "virtual_proxies-N1-M4 " in r).endswith("| 1/1 | 30.00 | 7.50 | 23.00 | Test CPU 9000 |")
    assert n3.endswith(f"| {report.NO_CPU} |")
    masked = next(r for r in sooner if "masked" in r)
    assert "| 0/1 | – | – | 13.00 |" in masked
    # the report shows only the chosen setting in the test tables, and the sweep on validation
    regime = dataclasses.replace(REGIMES["glyphs_cnn"], ablation_baseline="const")
    for r in records:
        (tmp_path / f"{r['ablation']}-{r['memvir']}-{r['seed']}.json").write_text(json.dumps({**r, "test_curve": []}))
    text = report.write_report("x", regime, tmp_path, tmp_path / "out", "cmd").read_text()
    sweep = text.split("## Settings sweep (validation only)")[1]
    assert "virtual_proxies-N1-M4" in sweep and "virtual_proxies-N1-M4" not in text.split("## Settings sweep")[0]
