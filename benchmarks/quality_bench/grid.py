"""The runs of a regime: one RunSpec per loss x arm x budget x seed (x ablation), in the order run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from quality_bench.regimes import (
    BOTH_ARMS,
    COMMON,
    TEST_CURVE,
    ZERO_SHOT,
    Regime,
    ablation_overrides,
    last_wins,
)

#: budget names: ``equal`` = the regime's E epochs, ``long`` = its ``long_factor`` x E
BUDGETS = ("equal", "long")
#: arm names of the plain runs: ``base`` = without MemVir, ``memvir`` = with it
ARMS = {"base": False, "memvir": True}


def budget_epochs(regime: Regime, budget: str) -> int:
    """The epochs of a budget name in ``regime``."""
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; choose from {sorted(BUDGETS)}.")
    return regime.epochs * (regime.long_factor if budget == "long" else 1)


@dataclass(frozen=True)
class RunSpec:
    """One run of the grid (``loss`` = :data:`ZERO_SHOT`: the untrained zero-shot row).

    ``same_as``: the name of the plain run (no ablation) this ablation run would repeat, when the
    ablation changes nothing in its arm (e.g. ``const`` for a MemVir arm already at a constant
    lr); the runner then records that run's results under this name instead of training again.
    """

    loss: str
    memvir: bool
    epochs: int
    seed: int
    ablation: str = ""
    extra: tuple[str, ...] = field(default=())
    same_as: str = ""

    @property
    def name(self) -> str:
        """The run's file name in the cache (unique within a regime)."""
        if self.loss == ZERO_SHOT:
            return ZERO_SHOT
        method = ("memvir" if self.memvir else "base") + (f"-{self.ablation}" if self.ablation else "")
        return f"{self.loss}-{method}-e{self.epochs}-s{self.seed}"

    def overrides(self, regime: Regime) -> list[str]:
        """The Hydra overrides of this run."""
        if self.loss == ZERO_SHOT:
            return [*regime.common_overrides(), f"seed={self.seed}"]
        return [
            *regime.common_overrides(),
            f"loss={self.loss}",
            f"memvir={'default' if self.memvir else 'none'}",
            f"trainer.max_epochs={self.epochs}",
            f"seed={self.seed}",
            *COMMON,
            *((TEST_CURVE,) if regime.test_curve else ()),
            *regime.arm_overrides(self.loss, self.memvir, self.epochs),
            *self.extra,
        ]


def _unless_same_as_plain(spec: RunSpec, regime: Regime) -> RunSpec:
    """``spec``, marked ``same_as`` its plain run when their overrides give the same configuration."""
    plain = RunSpec(spec.loss, spec.memvir, spec.epochs, spec.seed)
    if set(last_wins(*spec.overrides(regime))) == set(last_wins(*plain.overrides(regime))):
        return replace(spec, same_as=plain.name)
    return spec


def grid(regime: Regime, losses: Sequence[str], seeds: Sequence[int], ablations: Sequence[str],
         budgets: Sequence[str], ablation_budgets: Sequence[str] = ("equal",),
         arms: Sequence[str] = tuple(ARMS)) -> list[RunSpec]:
    """The runs, most important first: the zero-shot row (if the regime has one), the
    equal-epoch pairs of every seed and loss, then the longer budget (MemVir at ``long_factor``
    x E, then the baseline as long), then the ablations (every loss's MemVir with one setting
    changed, every seed, at E and/or the long budget as ``ablation_budgets`` says; the baseline
    too for those in :data:`BOTH_ARMS`; an ablation run that would repeat its plain run is
    marked ``same_as`` it). ``arms`` (names of :data:`ARMS`) limits the plain runs to those arms,
    e.g. ``["base"]`` for a baseline alone at a budget whose MemVir run is not wanted."""
    e, long = (budget_epochs(regime, b) for b in BUDGETS)
    for name in ablation_budgets:
        budget_epochs(regime, name)
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        raise ValueError(f"unknown arm(s) {unknown}; choose from {sorted(ARMS)}.")
    wanted = {ARMS[name] for name in arms}
    specs = [RunSpec(ZERO_SHOT, False, 0, 0)] if regime.zero_shot else []
    if "equal" in budgets:
        specs += [RunSpec(loss, memvir, e, seed) for seed in seeds for loss in losses for memvir in (False, True)
                  if memvir in wanted]
    if "long" in budgets:
        specs += [RunSpec(loss, memvir, long, seed) for seed in seeds for loss in losses
                  for memvir in (True, False) if memvir in wanted]
    for name in ablations:
        overrides = tuple(ablation_overrides(name))
        arms = (True, False) if name in BOTH_ARMS else (True,)
        specs += [_unless_same_as_plain(RunSpec(loss, memvir, budget_epochs(regime, budget), seed, name, overrides),
                                        regime)
                  for budget in ablation_budgets for seed in seeds for loss in losses for memvir in arms]
    return specs
