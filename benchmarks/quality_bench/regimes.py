"""The quality benchmark's settings as data: regimes (model x data x budget), losses, ablations.

A regime is a list of Hydra overrides plus the equal-epoch budget E; MemVir's and the
baseline's own overrides (per loss where the official runs differ) are applied to that arm
only. Every run also gets :data:`COMMON` (CSV logging, the epoch chosen on validation by
:data:`SELECT`) and, unless the regime says otherwise, :data:`TEST_CURVE`: the test split
evaluated at every validation (the per-epoch test curve of the protocol audit).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

METRICS = ("recall@1", "recall@2", "recall@4", "recall@8", "map@r")
#: The official README's figures: what the protocol audit compares.
AUDIT_METRICS = ("recall@1", "r_precision", "map@r")
SELECT = "val/map@r"
#: Prefix of the per-epoch test metrics in a run's csv log (SplitEvaluation's default for "test").
TEST_DURING_FIT = "test_during_fit"
COMMON = (
    "callbacks.rich_progress_bar=null",
    "logger=csv",
    f"optimized_metric={SELECT}",
    f"callbacks.model_checkpoint.monitor={SELECT}",
    # the tested checkpoints keep the MemVir memory, for benchmarks/memvir_drift.py
    "callbacks.model_checkpoint.save_weights_only=false",
)
TEST_CURVE = f"+callbacks.{TEST_DURING_FIT}._target_=memvir_pl.extensions.split_eval.SplitEvaluation"
LOSSES = {
    "norm_softmax": "NormSoftmax",
    "proxy_nca": "ProxyNCA",
    "proxy_anchor": "ProxyAnchor",
    "cosface": "CosFace",
    "arcface": "ArcFace",
}
#: The zero-shot row: the ImageNet backbone's pooled features, no training (a floor).
ZERO_SHOT = "zero_shot"
LABELS = {**LOSSES, ZERO_SHOT: "none (ImageNet pooled features)"}
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
    # The official MemVir runs keep the lr constant (the official repository's README): with a decaying lr the stored
    # proxies converge to the current ones, and each virtual class becomes a copy of a real one.
    "const": ["module.lr_schedule=constant"],
    # the converse for regimes that train at a constant lr (the emoji regime (iv))
    "cosine": ["module.lr_schedule=cosine"],
    # which part of MemVir does what (MemVirCallback's `parts`): old embeddings with their real
    # labels and no virtual proxies; old proxies only; full MemVir without a row's own-class copies
    "memory_rows": ["memvir.parts=memory_rows"],
    "virtual_proxies": ["memvir.parts=virtual_proxies"],
    "no_own_virtual": ["memvir.parts=no_own_virtual"],
    "virtual_proxies_masked": ["memvir.parts=virtual_proxies_masked"],
    # Proxy-Anchor only: the negative terms averaged over the real classes, so that virtual proxies
    # add negatives without shrinking each real proxy's own negative gradient by 1/(N+1)
    "real_negatives": ["loss.negative_mean=real_proxies"],
}
#: Ablations of the training setting rather than of MemVir: the baseline runs with them too.
BOTH_ARMS = frozenset({"const", "cosine"})
#: A MemVir part with its own N and M, e.g. ``virtual_proxies-N3-M20`` (the settings sweep).
SETTING = re.compile(r"(?P<part>full|memory_rows|virtual_proxies|virtual_proxies_masked|no_own_virtual)"
                     r"-N(?P<num_steps>\d+)-M(?P<step_gap>\d+)")


def ablation_overrides(name: str) -> list[str]:
    """The overrides of an ablation: an entry of :data:`ABLATIONS`, a :data:`SETTING` name (a part
    of MemVir at N past steps, M apart), or several of these joined by ``+``
    (``virtual_proxies-N10-M5+real_negatives``), whose overrides apply in that order."""
    if "+" in name:
        return [override for single in name.split("+") for override in ablation_overrides(single)]
    if name in ABLATIONS:
        return list(ABLATIONS[name])
    match = SETTING.fullmatch(name)
    if match is None:
        raise ValueError(f"unknown ablation {name!r}; choose from {sorted(ABLATIONS)} or name a MemVir part "
                         "with its N and M, e.g. virtual_proxies-N3-M20.")
    part = [] if match["part"] == "full" else [f"memvir.parts={match['part']}"]
    return [*part, f"memvir.num_steps={int(match['num_steps'])}", f"memvir.step_gap={int(match['step_gap'])}"]


def is_setting(name: str) -> bool:
    """Whether an ablation is one of a settings sweep (:data:`SETTING`)."""
    return SETTING.fullmatch(name) is not None


@dataclass(frozen=True)
class Regime:
    """A model x data setting: its overrides and the equal-epoch budget E.

    Attributes:
        description: one line, the report's title.
        overrides: Hydra overrides of every run.
        epochs: E, the equal-epoch budget (the long budget is 2E).
        memvir_overrides: MemVir runs only (after ``overrides``).
        loss_memvir_overrides: loss name -> MemVir overrides of that loss (after ``memvir_overrides``).
        baseline_overrides: baseline runs only.
        baseline_step_decay: the baseline's lr x0.1 once, after this share of its epochs (the
            official CARS196 baseline: 50/130), then constant; ``None``: no decay is added.
        steps_per_epoch: an epoch's optimiser steps (random batches, ``limit_train_batches``),
            so that the regime does not depend on the data's exact size; the runner checks that
            the data holds that many batches. ``None``: the whole training split.
        zero_shot: the grid starts with the zero-shot row (pretrained backbones only).
        long_factor: the long budget is ``long_factor`` x E epochs (the paper's MemVir runs
            train 2000/130 = 15x its baselines' epochs; 2 where a run's time allows no more).
        ablation_baseline: the baseline runs that MemVir's ablations are compared with: those
            of this ablation (trained like the MemVir arm apart from MemVir, e.g. ``"const"``
            where the plain baseline decays its lr and MemVir does not); ``""``: the plain
            baseline. Ablations in :data:`BOTH_ARMS` are always compared with their own baseline.
        test_curve: every run also evaluates the test split at each validation (:data:`TEST_CURVE`,
            for the protocol audit); ``False`` where that evaluation would dominate a run's time.
    """

    description: str
    overrides: tuple[str, ...]
    epochs: int
    memvir_overrides: tuple[str, ...] = ()
    loss_memvir_overrides: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    baseline_overrides: tuple[str, ...] = ()
    baseline_step_decay: float | None = None
    steps_per_epoch: int | None = None
    zero_shot: bool = False
    ablation_baseline: str = ""
    long_factor: int = 2
    test_curve: bool = True

    def common_overrides(self) -> tuple[str, ...]:
        """The overrides of every run of the regime (the zero-shot row included)."""
        steps = () if self.steps_per_epoch is None else (f"+trainer.limit_train_batches={self.steps_per_epoch}",)
        return (*self.overrides, *steps)

    def arm_overrides(self, loss: str, memvir: bool, epochs: int) -> tuple[str, ...]:
        """The overrides of one arm (MemVir or baseline) of ``loss`` trained ``epochs`` epochs."""
        if memvir:
            return last_wins(*self.memvir_overrides, *self.loss_memvir_overrides.get(loss, ()))
        if self.baseline_step_decay is None:
            return self.baseline_overrides
        at = max(1, round(self.baseline_step_decay * epochs))
        return last_wins("module.lr_schedule=step", f"module.lr_decay_step={at}", f"module.lr_decay_stop={at}",
                         *self.baseline_overrides)


def last_wins(*overrides: str) -> tuple[str, ...]:
    """``key=value`` overrides with one per key: a later value replaces an earlier one in place."""
    merged: dict[str, str] = {}
    for override in overrides:
        merged[override.split("=", 1)[0]] = override
    return tuple(merged.values())


def scaled_memvir(num_steps: int, step_gap: int, official_steps_per_epoch: int, steps_per_epoch: int,
                  keep: str = "gap") -> tuple[int, int]:
    """(N, M) of an official MemVir setting carried over to another epoch length.

    The memory's span, N·(M+1) steps, is kept in epochs: with ``keep="gap"`` M (the staleness
    of a snapshot in optimiser steps) stays and N = max(1, round(span · steps_per_epoch / (M+1)));
    with ``keep="steps"`` N stays and M = max(0, round(span · steps_per_epoch / N) − 1).
    """
    span = num_steps * (step_gap + 1) / official_steps_per_epoch  # epochs
    if keep == "gap":
        return max(1, round(span * steps_per_epoch / (step_gap + 1))), step_gap
    if keep == "steps":
        return num_steps, max(0, round(span * steps_per_epoch / num_steps) - 1)
    raise ValueError(f"keep must be 'gap' or 'steps', got {keep!r}")


def memvir_settings(num_steps: int, step_gap: int, warmup_epochs: int) -> tuple[str, ...]:
    """The overrides of MemVir's N, M and U."""
    return (f"memvir.num_steps={num_steps}", f"memvir.step_gap={step_gap}",
            f"memvir.warmup_epochs={warmup_epochs}")


# ---------------------------------------------------------------------------- emoji regimes
# Sizes from benchmarks/results/effnet_step.md (EfficientNet-Lite0, batch 128, one thread): at
# 48 px with the first 4 stages frozen (stem + the 1/2..1/8-resolution MBConv stages, where
# most CPU time goes) a training step takes ~2.3 s and the evaluation ~5.7 ms per image on the
# shared CPU. The official optimiser (Adam eps 0.01, wd 1e-4, lr 1e-4, proxies 1e-2: the module
# defaults but lr), frozen BN statistics, plain shuffle (no class-balanced batches), ImageNet
# weights; the data's train transform is the official RandomResizedCrop without flip.
EFFNET_EMOJI = ("model=efficientnet_lite0", "model.freeze_stages=4", "data.image_size=48",
                "data.m_per_class=null", "module.lr=1.0e-4")
EMOJI_STEPS, EMOJI_EPOCHS = 40, 4
EMOJI_FEW_STEPS, EMOJI_FEW_EPOCHS = 8, 20
# The official CARS196 runs (the official repository's README): 63 steps per epoch (8,054 images / 128); the baseline
# trains 130 epochs with lr x0.1 after epoch 50; MemVir N=45, M=10 (Proxy-NCA N=20, M=25),
# U=40 epochs (~1/3 of the baseline's budget, here of E).
CARS_STEPS, CARS_EPOCHS = 63, 130
CARS_WARMUP = round(40 * EMOJI_FEW_EPOCHS / CARS_EPOCHS)
# Our SOP experiment (conf/experiment/sop.yaml; SOP's settings are not published): N=5, M=100 at
# 465 steps per epoch (59,551 images / 128).
SOP_STEPS = 465

# Regime (vi): the backbone frozen, only a linear head trains, on pooled features computed once
# (data.cache_features): an epoch of the whole training split (66 batches of 128; the official
# CARS196 runs' 63) takes seconds, so the paper's budgets fit. 128 px renderings (the emoji
# render_size too). The official optimiser and budgets (the official repository's README): E = 130 epochs, the baseline
# with the official step decay (x0.1 after epoch 50) and, as the reference for MemVir's parts,
# at MemVir's constant lr (`const`); MemVir at a constant lr with U = 40 epochs (the official
# CARS196 warm-up) and our SOP experiment's N = 5 blocks spanning 1.1 epochs (M = 13), as (iv).
FROZEN_STEPS = 66
EFFNET_FROZEN = ("model=efficientnet_lite0", "model.freeze_stages=all", "data.cache_features=true",
                 "data.image_size=128", "data.options.render_size=128", "data.m_per_class=null",
                 "module.lr=1.0e-4")

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
        ("data=glyphs_cjk", "model=efficientnet_lite0", "data.image_size=64", "module.lr=1.0e-4"),
        epochs=3,
        memvir_overrides=("memvir.warmup_epochs=1", "memvir.step_gap=10"),
        steps_per_epoch=100,
    ),
    # The paper's CUB-200-2011 and CARS196 train on 100 and 98 classes; glyphs (a) train on
    # ~700. A 6.5 % train share of the characters (~100 classes, ~11 steps per epoch) asks
    # whether MemVir's extra classes help where real classes are few (MemVir's N, M, U as in
    # regime (i)). The baseline keeps the cosine decay; MemVir trains at its official constant lr
    # and its parts are compared with the baseline at that lr (`const`). No per-epoch test curve:
    # the test split holds 78.5 % of the characters (~17k renderings), and evaluating it at every
    # other epoch took half of a run.
    "glyphs_cnn_few": Regime(
        "(i-b) small CNN from scratch, glyphs (a) with ~100 training characters, 32 px",
        ("data=glyphs", "model=small_cnn",
         "data.options.fractions={train:0.065,val:0.15,test:0.785}"),
        epochs=40,
        memvir_overrides=("module.lr_schedule=constant",),
        ablation_baseline="const",
        test_curve=False,
    ),
    # SOP-like: every training emoji. Both arms at a constant lr (the official MemVir setting;
    # the `cosine` ablation runs both with a decay). MemVir: our SOP experiment's N=5 blocks with
    # the memory spanning the same 1.1 epochs (M+1 = 101 x 40/465 steps: M=8), exact mode (its
    # bank is 5 x 9 snapshots of C x 512 floats, small at this C); U = 1 epoch (1/4 of E, as the
    # glyph regimes; SOP's 5/100 would round to 0). Validation and test every 2 epochs.
    "emoji_effnet": Regime(
        f"(iv) EfficientNet-Lite0 (ImageNet) fine-tuned, emoji (all training classes), 48 px, "
        f"{EMOJI_STEPS} steps per epoch",
        ("data=emoji", *EFFNET_EMOJI, "module.lr_schedule=constant", "check_every=2"),
        epochs=EMOJI_EPOCHS,
        memvir_overrides=memvir_settings(*scaled_memvir(5, 100, SOP_STEPS, EMOJI_STEPS, keep="steps"), 1),
        steps_per_epoch=EMOJI_STEPS,
        zero_shot=True,
    ),
    # CARS-like: ~100 training emoji; the official CARS protocols at this budget: the baseline
    # with its step decay (x0.1 after 50/130 of its epochs), MemVir at a constant lr with (N, M)
    # scaled from the official runs keeping M (scaled_memvir: N=6, M=10; Proxy-NCA N=3, M=25;
    # keeping N=45 would give M=0 and a loss over 46 blocks of C, ~2 s a step on this CPU) and
    # U = 40/130 of E. Validation and test every 4 epochs (5 looks at E, as CARS' 26 at 130).
    "emoji_effnet_few": Regime(
        f"(v) EfficientNet-Lite0 (ImageNet) fine-tuned, emoji with ~100 training classes, 48 px, "
        f"{EMOJI_FEW_STEPS} steps per epoch",
        ("data=emoji_few", *EFFNET_EMOJI, "check_every=4"),
        epochs=EMOJI_FEW_EPOCHS,
        memvir_overrides=("module.lr_schedule=constant",
                          *memvir_settings(*scaled_memvir(45, 10, CARS_STEPS, EMOJI_FEW_STEPS), CARS_WARMUP)),
        loss_memvir_overrides={"proxy_nca": memvir_settings(
            *scaled_memvir(20, 25, CARS_STEPS, EMOJI_FEW_STEPS), CARS_WARMUP)},
        baseline_step_decay=50 / CARS_EPOCHS,
        steps_per_epoch=EMOJI_FEW_STEPS,
        zero_shot=True,
        # MemVir's parts against the baseline at MemVir's constant lr, not at the step decay
        ablation_baseline="const",
    ),
    # Validation and test every 5 epochs (the official baselines' check_epoch).
    "emoji_frozen": Regime(
        "(vi) EfficientNet-Lite0 (ImageNet) frozen, a linear head on its cached pooled features, emoji "
        "(all training classes), 128 px",
        ("data=emoji", *EFFNET_FROZEN, "check_every=5"),
        epochs=CARS_EPOCHS,
        memvir_overrides=("module.lr_schedule=constant",
                          *memvir_settings(*scaled_memvir(5, 100, SOP_STEPS, FROZEN_STEPS, keep="steps"), 40)),
        baseline_step_decay=50 / CARS_EPOCHS,
        zero_shot=True,
        ablation_baseline="const",
        long_factor=3,
    ),
    "tiny": Regime(
        "smoke test: a few steps on a Latin subset",
        (
            "data=glyphs",
            "model=small_cnn",
            "data.options.chars='U+0041-U+005A, U+0061-U+007A, U+0391-U+03C9'",
            "data.batch_size=32",
        ),
        epochs=1,
        memvir_overrides=memvir_settings(1, 0, 0),
        steps_per_epoch=3,
        zero_shot=True,
    ),
}
