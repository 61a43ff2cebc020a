"""Small models and data shared by the MemVir tests: a linear embedder over fixed random data."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from memvir_pl.losses.base import ProxyLoss


class CosineSoftmax(ProxyLoss):
    """Norm-softmax written out here so the rule tests depend on no loss module; records each call."""

    def __init__(self, num_classes: int, embedding_dim: int, scale: float = 8.0) -> None:
        super().__init__(num_classes, embedding_dim)
        self.scale = scale
        self.calls: list[dict] = []

    def compute(self, embeddings: Tensor, labels: Tensor, proxies: Tensor, num_classes: int) -> Tensor:
        logits = self.scale * F.normalize(embeddings, dim=1) @ F.normalize(proxies, dim=1).T
        loss = F.cross_entropy(logits, labels)
        self.calls.append(
            {"num_classes": num_classes, "labels": labels.clone(), "proxies": proxies.detach().clone(),
             "loss": loss.detach().clone()}
        )
        return loss


def fixed_data(steps: int, batch: int, in_dim: int, num_classes: int, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (steps * batch,), generator=g)
    centres = torch.randn(num_classes, in_dim, generator=g)
    x = centres[labels] + 0.7 * torch.randn(steps * batch, in_dim, generator=g)
    return TensorDataset(x, labels)


class LinearEmbedder(pl.LightningModule):
    """Linear(in_dim, D) -> L2-normalise -> loss; SGD with momentum over all parameters."""

    def __init__(self, loss: ProxyLoss, in_dim: int, dataset: TensorDataset, batch: int, lr: float = 0.5):
        super().__init__()
        torch.manual_seed(1)
        self.net = nn.Linear(in_dim, loss.embedding_dim)
        self.loss = loss
        self.dataset = dataset
        self.batch = batch
        self.lr = lr

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.net(x), dim=1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.loss(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)

    def train_dataloader(self):
        return DataLoader(self.dataset, batch_size=self.batch, shuffle=False)


def quiet_trainer(**kwargs) -> pl.Trainer:
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, deterministic=True)
    defaults.update(kwargs)
    return pl.Trainer(**defaults)


def load_pml_proxies(loss_fn: nn.Module, weight: str, proxies: Tensor, class_first: bool) -> Tensor:
    """Copy ``proxies`` (C, D) into a PML loss's own weight (stored as (C, D) when
    ``class_first``, else (D, C)) for a reference computation; returns that parameter."""
    param = getattr(loss_fn, weight)
    with torch.no_grad():
        param.copy_(proxies if class_first else proxies.t())
    return param
