"""MemVirCallback: memory-based virtual classes for any proxy loss, as a Lightning callback."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from memvir_pl.losses.base import VirtualClassLoss
from memvir_pl.memory import VirtualClassMemory


class MemVirCallback(pl.Callback):
    """Add MemVir (Ko et al., ICCV 2021) to a LightningModule that holds one proxy loss.

    Epochs 1..``warmup_epochs`` train plainly. From then on, every training
    step stores its L2-normalised embeddings, labels and the proxies of its
    forward pass, and the loss of step t also sees the embeddings, labels
    (+ j*C) and proxies of steps t-j(M+1), j = 1..n, n = min(N, L // (M+1))
    with L the items stored: a new block of C virtual classes every M+1
    steps until N blocks are active. Memory rows carry no gradient.

    A training step is one call of ``training_step`` (one batch); with
    gradient accumulation every micro-batch is a step of its own.

    Args:
        num_steps: N, the number of past steps used (virtual-class blocks).
        step_gap: M, steps skipped between two used steps.
        warmup_epochs: U, epochs (counted from 1) without MemVir.
        loss_attr: dotted attribute path of the loss in the module (e.g.
            ``"criterion"``); ``None`` finds the module's single
            :class:`~memvir_pl.losses.ProxyLoss` / ``PMLAdapter``.
        storage_dtype: dtype of stored embeddings and proxies (e.g. ``"bfloat16"``).
        proxy_mode: ``"exact"`` (the paper) or ``"saving"`` (O(N) proxy
            snapshots; rule in :mod:`memvir_pl.memory`).
        memory_weight: weight of each memory row in the loss relative to a
            current-batch row (weight 1); 1.0 = the paper's equal weighting.
            Cross-entropy losses take the weighted mean over rows, Proxy-Anchor
            multiplies each row's exp terms (see the losses' ``compute``).
    """

    def __init__(
        self,
        num_steps: int,
        step_gap: int,
        warmup_epochs: int = 0,
        loss_attr: str | None = None,
        storage_dtype: torch.dtype | str | None = None,
        proxy_mode: str = "exact",
        memory_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if int(warmup_epochs) != warmup_epochs or warmup_epochs < 0:
            raise ValueError(f"MemVirCallback: warmup_epochs must be an integer >= 0, got {warmup_epochs!r}.")
        if not memory_weight > 0:
            raise ValueError(f"MemVirCallback: memory_weight must be > 0, got {memory_weight!r}.")
        self.memory_weight = float(memory_weight)
        self.memory = VirtualClassMemory(num_steps, step_gap, storage_dtype=storage_dtype, proxy_mode=proxy_mode)
        self.warmup_epochs = int(warmup_epochs)
        self.loss_attr = loss_attr
        self.loss: VirtualClassLoss | None = None
        self._active = False  # MemVir epoch (past warm-up)
        self._in_step = False  # inside a training batch
        self._stored_this_step = False
        self.virtual_blocks = 0  # n of the latest step

    @property
    def num_steps(self) -> int:
        return self.memory.num_steps

    @property
    def step_gap(self) -> int:
        return self.memory.step_gap

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self.loss = find_loss(pl_module, self.loss_attr)
        if self.loss.batch_expander is not None and self.loss.batch_expander != self.expand_batch:
            raise ValueError(
                f"MemVirCallback: the loss {type(self.loss).__name__} already has a batch expander "
                "(another MemVirCallback?); use one MemVirCallback per loss."
            )
        self.loss.batch_expander = self.expand_batch

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and self.loss is not None:
            self.loss.batch_expander = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        # per batch, not per epoch: a run resumed mid-epoch gets no on_train_epoch_start
        self._active = trainer.current_epoch >= self.warmup_epochs
        self._in_step = True
        self._stored_this_step = False

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._in_step = False
        assert self.loss is not None
        pl_module.log("memvir/virtual_blocks", float(self.virtual_blocks), on_step=True, on_epoch=False)
        pl_module.log(
            "memvir/num_classes",
            float((self.virtual_blocks + 1) * self.loss.num_classes),
            on_step=True,
            on_epoch=False,
        )

    # ------------------------------------------------------------------ the rule
    def expand_batch(
        self, loss: VirtualClassLoss, embeddings: Tensor, labels: Tensor, proxies: Tensor
    ) -> tuple:
        """The loss's view of step t: current rows and proxies plus n memory blocks.

        Args:
            embeddings: (B, D) current embeddings (with gradient).
            labels: (B,) labels in [0, C).
            proxies: (C*K, D) current proxies (with gradient).

        Returns:
            embeddings ((n+1)B', D), labels (+ j*C for block j), proxies
            ((n+1)*C*K, D) and the class count (n+1)*C; with ``memory_weight``
            != 1 and n > 0 also the row weights ((n+1)B',): 1 for current rows,
            ``memory_weight`` for memory rows. Outside a MemVir training step,
            the inputs unchanged.
        """
        num_classes = loss.num_classes
        if not (self._active and self._in_step and loss.training):
            self.virtual_blocks = 0
            return embeddings, labels, proxies, num_classes
        if self._stored_this_step:
            raise RuntimeError(
                "MemVirCallback: the loss was called twice in one training step; MemVir stores one "
                "memory item per step. Compute the loss once per training_step (concatenate the batches)."
            )
        items = self.memory.recall()
        self.virtual_blocks = len(items)
        out_embeddings = torch.cat([embeddings] + [m.embeddings.to(embeddings.dtype) for m in items])
        out_labels = torch.cat([labels] + [m.labels + (j + 1) * num_classes for j, m in enumerate(items)])
        out_proxies = torch.cat([proxies] + [m.proxies.to(proxies.dtype) for m in items])
        with torch.no_grad():
            self.memory.push(embeddings, labels, proxies, normalize=True)
        self._stored_this_step = True
        expanded = (out_embeddings, out_labels, out_proxies, (len(items) + 1) * num_classes)
        if self.memory_weight == 1.0 or not items:
            return expanded
        row_weights = torch.full((len(out_labels),), self.memory_weight, device=embeddings.device)
        row_weights[: len(labels)] = 1.0
        return (*expanded, row_weights)

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        return {"memory": self.memory.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.memory.load_state_dict(state_dict["memory"])


def find_loss(pl_module: torch.nn.Module, loss_attr: str | None = None) -> VirtualClassLoss:
    """The module's proxy loss: ``loss_attr`` (dotted path) or its single VirtualClassLoss submodule."""
    if loss_attr is not None:
        target: Any = pl_module
        for part in loss_attr.split("."):
            if not hasattr(target, part):
                raise ValueError(
                    f"MemVirCallback: {type(pl_module).__name__} has no attribute path {loss_attr!r} "
                    f"(missing {part!r}); set loss_attr to where the loss lives, e.g. 'criterion'."
                )
            target = getattr(target, part)
        if not isinstance(target, VirtualClassLoss):
            raise ValueError(
                f"MemVirCallback: {loss_attr!r} is a {type(target).__name__}, not a memvir_pl ProxyLoss; "
                "use a loss from memvir_pl.losses or wrap a pytorch-metric-learning loss in PMLAdapter."
            )
        return target
    found = [(name, m) for name, m in pl_module.named_modules() if isinstance(m, VirtualClassLoss)]
    if len(found) != 1:
        names = ", ".join(name or "<module>" for name, _ in found) or "none"
        raise ValueError(
            f"MemVirCallback: expected exactly one memvir_pl ProxyLoss/PMLAdapter in "
            f"{type(pl_module).__name__}, found {len(found)} ({names}); pass loss_attr='...' to choose, "
            "or wrap a pytorch-metric-learning loss in memvir_pl.losses.PMLAdapter."
        )
    return found[0][1]
