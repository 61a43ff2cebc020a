"""Re-evaluate a checkpoint: ``python -m memvir_pl.eval ckpt_path=... [split=val|test] [data.root=PATH]``.

Prints the metrics table and writes ``metrics.json`` ({"checkpoint", "split", "metrics"}) in the run directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from memvir_pl.checkpoint import load_checkpoint, restore_run
from memvir_pl.config import CONFIG_DIR, resolve_path
from memvir_pl.report import print_metrics_table

SPLITS = ("val", "test")


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Metrics of ``cfg.ckpt_path`` on ``cfg.split``; also written to ``metrics.json``."""
    if cfg.split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {cfg.split!r}.")
    ckpt_path = resolve_path(cfg.ckpt_path)
    _, datamodule, module = restore_run(load_checkpoint(ckpt_path), cfg.get("data"))
    trainer = hydra.utils.instantiate(cfg.trainer)
    run = trainer.validate if cfg.split == "val" else trainer.test
    results = run(module, datamodule=datamodule, verbose=False)
    metrics = {k: float(v) for k, v in (results[0] if results else {}).items()}
    report = {"checkpoint": ckpt_path, "split": cfg.split, "metrics": metrics}
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(report, indent=2))
    print_metrics_table({cfg.split: metrics}, title=f"{ckpt_path} ({output_dir / 'metrics.json'})")
    return report


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    from memvir_pl.cli import run

    run("memvir-eval")
