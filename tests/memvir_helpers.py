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

    supports_logit_mask = True

    def __init__(self, num_classes: int, embedding_dim: int, scale: float = 8.0) -> None:
        super().__init__(num_classes, embedding_dim)
        self.scale = scale
        self.calls: list[dict] = []

    def compute(
        self, embeddings: Tensor, labels: Tensor, proxies: Tensor, num_classes: int, logit_mask: Tensor | None = None
    ) -> Tensor:
        logits = self.scale * F.normalize(embeddings, dim=1) @ F.normalize(proxies, dim=1).T
        if logit_mask is not None:
            logits = logits.masked_fill(logit_mask, float("-inf"))
        loss = F.cross_entropy(logits, labels)
        self.calls.append(
            {"num_classes": num_classes, "labels": labels.clone(), "proxies": proxies.detach().clone(),
             "loss": loss.detach().clone()}
        )
        return loss


def proxy_anchor_loop(x, labels, proxies, weights, alpha, delta, mask=None, negative_count=None):
    """Proxy-Anchor with weighted exp terms, one proxy and one row at a time, float64;
    ``mask[i][c]`` True leaves row i out of proxy c's negatives; the negative sum is divided by
    ``negative_count`` (default: every proxy)."""
    x = torch.nn.functional.normalize(x.double(), dim=1)
    p = torch.nn.functional.normalize(proxies.double(), dim=1)
    pos_total, neg_total, with_positives = 0.0, 0.0, 0
    for c in range(len(p)):
        pos_sum = neg_sum = 0.0
        for i in range(len(x)):
            cos = float(x[i] @ p[c])
            if int(labels[i]) == c:
                pos_sum += float(weights[i]) * torch.exp(torch.tensor(-alpha * (cos - delta))).item()
            elif mask is None or not mask[i][c]:
                neg_sum += float(weights[i]) * torch.exp(torch.tensor(alpha * (cos + delta))).item()
        if any(int(y) == c for y in labels):
            with_positives += 1
            pos_total += torch.log1p(torch.tensor(pos_sum)).item()
        neg_total += torch.log1p(torch.tensor(neg_sum)).item()
    return pos_total / with_positives + neg_total / (negative_count or len(p))


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


def reference_run(
    model: LinearEmbedder,
    num_steps: int,
    step_gap: int,
    warmup_epochs: int,
    epochs: int,
    steps_per_epoch: int,
    accumulate: int = 1,
    parts: str = "full",
) -> list[dict]:
    """MemVir (the paper's rule) as a plain loop: a list of past items, indices by explicit arithmetic.

    ``parts`` as ``MemVirCallback(parts=...)``: ``"full"`` (the paper), ``"memory_rows"`` (memory rows with
    their real labels, current proxies only), ``"virtual_proxies"`` (old proxy blocks, no memory rows),
    ``"no_own_virtual"`` (full, and each row's logits lose every proxy of its real class but its target,
    found by a loop over the columns), ``"virtual_proxies_masked"`` (old proxy blocks, no memory rows,
    and the same loop over the columns). With ``accumulate`` > 1 the optimiser steps every ``accumulate``
    batches on the mean of their losses (Lightning's gradient accumulation); every batch is still one
    MemVir step. Returns one record per step, like ``CosineSoftmax.calls``.
    """
    with_rows = parts not in ("virtual_proxies", "virtual_proxies_masked")
    masked = parts in ("no_own_virtual", "virtual_proxies_masked")
    net, proxies, scale = model.net, model.loss.proxies, model.loss.scale
    C, B, N, M = model.loss.num_classes, model.batch, num_steps, step_gap
    opt = torch.optim.SGD(list(net.parameters()) + [proxies], lr=model.lr, momentum=0.9)
    past: list[tuple] = []  # (embeddings, labels, proxies) of steps t-L .. t-1, oldest first
    records = []
    x_all, y_all = model.dataset.tensors
    for epoch in range(1, epochs + 1):
        for i in range(steps_per_epoch):
            x, y = x_all[i * B:(i + 1) * B], y_all[i * B:(i + 1) * B]
            emb = F.normalize(net(x), dim=1)
            embs, labels, blocks = [emb], [y], [proxies]
            if epoch > warmup_epochs:
                L = len(past)
                n = min(N, L // (M + 1))
                for j in range(1, n + 1):
                    e_old, y_old, p_old = past[L - j * (M + 1)]  # step t - j(M+1)
                    if with_rows:
                        embs.append(e_old)
                        labels.append(y_old + (0 if parts == "memory_rows" else j * C))
                    if parts != "memory_rows":
                        blocks.append(p_old)
            e, yy, p = torch.cat(embs), torch.cat(labels), torch.cat(blocks)
            logits = scale * F.normalize(e, dim=1) @ F.normalize(p, dim=1).T
            if masked:
                keep = [[c % C != int(label) % C or c == int(label) for c in range(len(p))] for label in yy]
                logits = logits.masked_fill(~torch.tensor(keep), float("-inf"))
            loss = F.cross_entropy(logits, yy)
            records.append({"num_classes": p.shape[0], "labels": yy, "proxies": p.detach().clone(),
                            "loss": loss.detach()})
            (loss / accumulate).backward()
            if epoch > warmup_epochs:
                past.append((emb.detach().clone(), y.clone(), proxies.detach().clone()))
                del past[: max(0, len(past) - N * (M + 1))]
            if (i + 1) % accumulate == 0:
                opt.step()
                opt.zero_grad()
    return records


def assert_same_steps(got: list[dict], expected: list[dict]) -> None:
    """Every step's class count, labels, proxies and loss equal (float tolerance 1e-6)."""
    assert len(got) == len(expected)
    for step, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert g["num_classes"] == e["num_classes"], step
        assert torch.equal(g["labels"], e["labels"]), step
        torch.testing.assert_close(g["proxies"], e["proxies"], rtol=0, atol=1e-6, msg=f"step {step}")
        torch.testing.assert_close(g["loss"], e["loss"], rtol=0, atol=1e-6, msg=f"step {step}")
