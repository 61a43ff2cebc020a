"""``--plan``: a regime's size on this machine before running it: its data's batches and images,
a measured training step and evaluation batch, and the predicted minutes per run."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from quality_bench.grid import RunSpec
from quality_bench.regimes import Regime
from quality_bench.runner import machine_overrides


def _median_seconds(step: Callable[[], None], reps: int) -> float:
    """Median seconds of ``step`` over ``reps`` calls after one warm-up call."""
    step()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def predicted_seconds(steps: int, step_s: float, validations: int, val_images: int, test_images: int,
                      eval_s_per_image: float, test_curve: bool = True) -> float:
    """A run's seconds: ``steps`` training steps, ``validations`` evaluations of val (+ test where
    the regime has the per-epoch ``test_curve``), and the final test of the chosen checkpoint."""
    per_validation = val_images + (test_images if test_curve else 0)
    return steps * step_s + eval_s_per_image * (validations * per_validation + test_images)


def plan(regime_name: str, regime: Regime, work_dir: Path, reps: int = 3) -> str:
    """Measure the baseline NormSoftmax run's training step and evaluation batch of the regime
    (its real data, model and loss; MemVir's larger loss not included) and predict a run's
    minutes at E and at the long budget."""
    from memvir_pl.config import compose_config
    from memvir_pl.train import build_run

    spec = RunSpec("norm_softmax", False, regime.epochs, 0)
    cfg = compose_config([*spec.overrides(regime), *machine_overrides(work_dir)],
                         work_dir / "plan")
    datamodule, module = build_run(cfg)
    batches = len(datamodule.train_dataloader())
    steps = min(batches, regime.steps_per_epoch or batches)
    sizes = {s: len(getattr(datamodule, f"{s}_dataloader")().dataset) for s in ("train", "val", "test")}
    batch = next(iter(datamodule.train_dataloader()))
    optimiser = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=1e-4, eps=0.01)
    module.train()

    def train_step() -> None:
        optimiser.zero_grad()
        module.loss(module(batch["image"]), batch["label"]).backward()
        optimiser.step()

    eval_batch = next(iter(datamodule.val_dataloader()))["image"]

    def eval_step() -> None:
        with torch.inference_mode():
            module.eval()(eval_batch)

    step_s = _median_seconds(train_step, reps)
    eval_s = _median_seconds(eval_step, reps) / len(eval_batch)
    every = int(cfg.check_every)
    lines = [
        f"regime {regime_name}: {regime.description}",
        f"- images train/val/test: {sizes['train']}/{sizes['val']}/{sizes['test']}; training batches of "
        f"{len(batch['label'])}: {batches} (the regime's epoch: {steps} steps); validation every {every} epochs",
        f"- measured here (torch threads {torch.get_num_threads()}): training step {step_s:.2f} s, "
        f"evaluation {1000 * eval_s:.2f} ms per image",
    ]
    for epochs in (regime.epochs, regime.long_factor * regime.epochs):
        seconds = predicted_seconds(epochs * steps, step_s, math.floor(epochs / every), sizes["val"],
                                    sizes["test"], eval_s, regime.test_curve)
        lines.append(f"- E={epochs}: {epochs * steps} steps, predicted {seconds / 60:.1f} min per run")
    return "\n".join(lines)
