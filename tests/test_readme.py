"""The README's code examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch.utils.data import DataLoader

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_callback_example_trains_with_virtual_classes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the example's Trainer writes lightning_logs/ in the working directory
    example = next(b for b in python_blocks() if "MemVirCallback(" in b)
    torch.manual_seed(0)
    namespace: dict = {}
    exec(compile(example, str(README), "exec"), namespace)
    assert isinstance(namespace["train_loader"], DataLoader)
    memvir = namespace["memvir"]
    assert memvir.memory.pushes == 2 * 20  # epochs 2 and 3 store one item per step
    # the last step saw 39 stored items: n = min(N=5, 39 // (M+1=11)) = 3 blocks
    assert memvir.virtual_blocks == 3 and memvir.loss.batch_expander is None
    assert memvir.loss.proxies.shape == (10, 64)
    optimiser = namespace["net"].configure_optimizers()
    assert [g["lr"] for g in optimiser.param_groups] == [1e-3, 1e-2]
    assert optimiser.param_groups[1]["params"][0] is memvir.loss.proxies
    scores = namespace["metric"].compute()
    assert set(scores) == {"recall@1", "recall@4", "r_precision", "map@r", "num_skipped_queries"}
    assert scores["recall@1"] > 0.9  # 10 well-separated toy classes


def test_pml_adapter_example_builds():
    example = next(b for b in python_blocks() if "PMLAdapter(" in b)
    namespace: dict = {}
    exec(compile(example, str(README), "exec"), namespace)
    loss = namespace["loss"]
    assert loss.num_classes == 100 and loss.class_proxies().shape == (1000, 512)


REPO = README.parent
#: the Hydra commands of the README and the config each composes
HYDRA_COMMANDS = {"memvir_pl.train": "train", "memvir-train": "train", "memvir_pl.eval": "eval",
                  "memvir-eval": "eval", "memvir_pl.embed": "embed", "memvir-embed": "embed",
                  "memvir_pl.search": "search", "memvir-search": "search"}
#: where the paths the README names live
PATH_PREFIXES = (".ci/", "benchmarks/", "conf/", "docs/", "notebooks/", "src/", "tests/")


def readme_commands() -> list[list[str]]:
    """Every shell command of the README's bash blocks: continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line.split())
    return commands


def hydra_overrides(words: list[str]) -> tuple[str, list[str]] | None:
    """(config name, overrides) of a Hydra command; a sweep's ``a=x,y`` becomes its first value."""
    words = words[2:] if words[:2] == ["python", "-m"] else words
    if not words or words[0] not in HYDRA_COMMANDS:
        return None
    overrides = []
    for word in words[1:]:
        if word in ("-m", "--multirun"):
            continue
        word = re.sub(r"\$\{[A-Z_]+\}", "1", word)  # shell variables
        word = re.sub(r"<[a-z_]+>|…|\.\.\.", "x", word)  # placeholders the user fills in
        key, _, value = word.partition("=")
        if "," in value and not value.startswith("["):
            value = value.split(",")[0]
        overrides.append(f"{key}={value}")
    return HYDRA_COMMANDS[words[0]], overrides


def test_every_hydra_command_in_the_readme_composes(tmp_path):
    from memvir_pl.config import compose_config

    composed = []
    for words in readme_commands():
        parsed = hydra_overrides(words)
        if parsed is None:
            continue
        name, overrides = parsed
        try:
            compose_config(overrides, tmp_path, config_name=name)
        except Exception as error:  # noqa: BLE001 - report the command that failed
            raise AssertionError(f"README command does not compose: {' '.join(words)}\n{error}") from error
        composed.append(name)
    assert composed.count("train") >= 10 and {"eval", "embed", "search"} <= set(composed)


def test_every_module_script_and_path_the_readme_names_exists():
    import importlib.util

    text = README.read_text()
    for words in readme_commands():
        if words[:2] == ["python", "-m"]:
            assert importlib.util.find_spec(words[2]) is not None, " ".join(words)
        elif words[0] == "python" and words[1].endswith(".py"):
            assert (REPO / words[1]).is_file(), " ".join(words)
    named = set(re.findall(r"`([^`\s]+)`", text)) | set(re.findall(r"\]\(([^)\s]+)\)", text))
    paths = {p.split(":")[0].rstrip(".,") for p in named if p.startswith(PATH_PREFIXES)}
    assert len(paths) >= 10
    for path in sorted(paths):
        if re.search(r"[<>{}]|…", path):
            continue  # a pattern (e.g. quality_<regime>.md), not a file
        found = list(REPO.glob(path)) if "*" in path else [REPO / path] if (REPO / path).exists() else []
        assert found, f"README names {path}, which the repository does not have"
    for word in ("DESIGN.md", "PAPER.md", "shared/"):
        assert word not in text, word
