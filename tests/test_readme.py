"""The README's code examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_callback_example_trains_with_virtual_classes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the example's Trainer writes lightning_logs/ in the working directory
    example = next(b for b in python_blocks() if "MemVirCallback(" in b)
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (320,), generator=g)
    images = torch.randn(10, 3, 8, 8, generator=g)[labels] + 0.3 * torch.randn(320, 3, 8, 8, generator=g)
    namespace = {"train_loader": DataLoader(TensorDataset(images, labels), batch_size=16, shuffle=True)}
    exec(compile(example, str(README), "exec"), namespace)
    memvir = namespace["memvir"]
    assert memvir.memory.pushes == 2 * 20  # epochs 2 and 3 store one item per step
    # the last step saw 39 stored items: n = min(N=5, 39 // (M+1=11)) = 3 blocks
    assert memvir.virtual_blocks == 3 and memvir.loss.batch_expander is None
    assert memvir.loss.proxies.shape == (10, 64)


def test_pml_adapter_example_builds():
    example = next(b for b in python_blocks() if "PMLAdapter(" in b)
    namespace: dict = {}
    exec(compile(example, str(README), "exec"), namespace)
    loss = namespace["loss"]
    assert loss.num_classes == 100 and loss.class_proxies().shape == (1000, 512)
