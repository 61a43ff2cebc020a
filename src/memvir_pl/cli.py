"""The command-line entry points: ``memvir-train``, ``memvir-eval``, ``memvir-embed``, ``memvir-search``.

Each is also ``python -m memvir_pl.<command>``; ``python -m memvir_pl`` lists them. Every command
takes Hydra overrides (``key=value``), ``--help`` (its own keys only) and ``--version``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import NamedTuple


class Command(NamedTuple):
    module: str  # the module whose ``main`` (a Hydra app) runs it
    summary: str
    example: str
    from_checkpoint: bool  # its data, model and loss settings come from a checkpoint


COMMANDS: dict[str, Command] = {
    "memvir-train": Command("memvir_pl.train", "train an embedding with MemVir (or a baseline); Hydra config groups",
                            "memvir-train +experiment=cars data.root=/datasets/CARS196", False),
    "memvir-eval": Command("memvir_pl.eval", "re-evaluate a checkpoint on a split (Recall@K, R-Precision, MAP@R)",
                           "memvir-eval ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt split=test", True),
    "memvir-embed": Command("memvir_pl.embed", "write a split's embeddings, labels and items with a checkpoint",
                            "memvir-embed ckpt_path=<run>/checkpoints/last.ckpt split=test output_dir=emb", True),
    "memvir-search": Command("memvir_pl.search", "search a folder of images with a checkpoint (top-k neighbours)",
                             "memvir-search ckpt_path=<ckpt> gallery=DIR query=IMAGE k=5", True),
}

#: config groups of training that a checkpoint command takes from the checkpoint instead
TRAINING_GROUPS = ("data", "model", "loss", "memvir", "module", "trainer", "experiment")


def version() -> str:
    from memvir_pl import __version__

    return __version__


def check_checkpoint_overrides(command: str, argv: Sequence[str]) -> None:
    """Exit with a clear message when a checkpoint command is given a training config group
    (``data=cars``): Hydra would suggest ``+data=cars``, which is not what the user wants."""
    for arg in argv:
        key = arg.split("=", 1)[0].lstrip("+~")
        if "=" in arg and key in TRAINING_GROUPS:
            raise SystemExit(
                f"{command}: '{arg}': the {key} settings come from the checkpoint. Override single keys instead "
                f"(e.g. data.root=PATH, data.eval_batch_size=256); `{command} --help` lists the keys.")


def run(command: str, argv: Sequence[str] | None = None) -> None:
    """Run ``command`` (a key of :data:`COMMANDS`) on ``argv`` (default ``sys.argv[1:]``)."""
    spec = COMMANDS[command]
    args = list(sys.argv[1:] if argv is None else argv)
    if "--version" in args or "-V" in args:
        print(f"{command} (memvir-pl) {version()}")
        return
    if spec.from_checkpoint:
        check_checkpoint_overrides(command, args)
    module = importlib.import_module(spec.module)
    args = getattr(module, "hydra_args", list)(args)
    sys.argv[1:] = args  # argv[0] stays: Lightning's DDP launcher starts the other processes from it
    module.main()


def train() -> None:
    run("memvir-train")


def evaluate() -> None:
    run("memvir-eval")


def embed() -> None:
    run("memvir-embed")


def search() -> None:
    run("memvir-search")


def listing() -> str:
    """What ``python -m memvir_pl`` prints: the commands, what each does and an example."""
    lines = [f"memvir-pl {version()}: MemVir for deep metric learning on PyTorch Lightning", "", "Commands "
             "(also `python -m memvir_pl.<train|eval|embed|search>`; each takes Hydra overrides key=value, "
             "--help and --version):", ""]
    width = max(map(len, COMMANDS))
    for name, spec in COMMANDS.items():
        lines += [f"  {name:<{width}}  {spec.summary}", f"  {'':<{width}}  e.g. {spec.example}"]
    lines += ["", "Datasets: python -m memvir_pl.data fetch cub|sop|cars|inshop --root DIR"]
    return "\n".join(lines)
