"""MemVirCallback: memory-based virtual classes for any proxy loss, as a Lightning callback."""

from __future__ import annotations

from typing import Any, NamedTuple

import pytorch_lightning as pl
import torch
from torch import Tensor

from memvir_pl.losses.base import VirtualClassLoss
from memvir_pl.memory import VirtualClassMemory


class PartInputs(NamedTuple):
    """What one value of ``MemVirCallback(parts=...)`` feeds the loss from the memory."""

    rows: bool  # past embeddings as extra rows
    proxies: bool  # past proxy snapshots as extra (virtual) classes
    mask_own_copies: bool  # each row's logits lose its real class's proxies from the other blocks


PART_INPUTS = {
    "full": PartInputs(rows=True, proxies=True, mask_own_copies=False),
    "memory_rows": PartInputs(rows=True, proxies=False, mask_own_copies=False),
    "virtual_proxies": PartInputs(rows=False, proxies=True, mask_own_copies=False),
    "no_own_virtual": PartInputs(rows=True, proxies=True, mask_own_copies=True),
    "virtual_proxies_masked": PartInputs(rows=False, proxies=True, mask_own_copies=True),
}
PARTS = tuple(PART_INPUTS)


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
        parts: which of MemVir's inputs the loss sees (an ablation; one of :data:`PARTS`):

            - ``"full"`` (the paper): rows [x_t; x_mem], labels
              [y_t; y_mem + jC], proxies [W_t; W_{t-j(M+1)}...], (n+1)C classes.
            - ``"memory_rows"``: past embeddings with their real labels, no
              virtual proxies (cross-batch-memory style): rows [x_t; x_mem],
              labels [y_t; y_mem], proxies W_t, C classes.
            - ``"virtual_proxies"``: virtual proxies only, no memory rows:
              rows x_t, labels y_t, proxies [W_t; W_{t-j(M+1)}...], (n+1)C classes.
            - ``"no_own_virtual"``: ``"full"`` with each row's own-class copies
              removed from its logits: a row of real class y (label y + jC)
              keeps its target proxy (class y of block j) and loses class y of
              every other block. Needs a loss that takes a ``logit_mask``
              (``supports_logit_mask``: our Softmax family, ProxyNCA, ProxyAnchor).
            - ``"virtual_proxies_masked"``: ``"virtual_proxies"`` with each
              row's own-class old proxies removed from its logits: rows x_t,
              labels y_t, proxies [W_t; W_{t-j(M+1)}...]; a row of class y
              loses class y of blocks 1..n and keeps every other class's old
              proxies as negatives. Separates "pushed away from my class's past
              proxy" from "more negatives"; needs a logit-mask loss, as above.

    The memory stores only what ``parts`` uses: no embeddings or labels under
    ``"virtual_proxies"`` and ``"virtual_proxies_masked"``, no proxy snapshots
    under ``"memory_rows"``
    (:meth:`VirtualClassMemory.bank_bytes` gives the size). A new block still
    comes every M+1 steps, and ``memvir/virtual_blocks`` logs n, the past
    steps used.

    Logged metrics are ``memvir/virtual_blocks`` and ``memvir/num_classes``
    (``memvir/<loss_attr>/...`` when ``loss_attr`` is set). The memory is saved
    in checkpoints under :attr:`state_key`, built from ``loss_attr``, so two
    callbacks for two losses of one module (``loss_attr="loss_a"`` and
    ``"loss_b"``) coexist.
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
        parts: str = "full",
    ) -> None:
        super().__init__()
        if int(warmup_epochs) != warmup_epochs or warmup_epochs < 0:
            raise ValueError(f"MemVirCallback: warmup_epochs must be an integer >= 0, got {warmup_epochs!r}.")
        if not memory_weight > 0:
            raise ValueError(f"MemVirCallback: memory_weight must be > 0, got {memory_weight!r}.")
        if parts not in PARTS:
            raise ValueError(
                f"MemVirCallback: parts must be one of {PARTS} ('full' = the paper's rule), got {parts!r}."
            )
        self.memory_weight = float(memory_weight)
        self.parts = parts
        uses = PART_INPUTS[parts]
        self.memory = VirtualClassMemory(
            num_steps, step_gap, storage_dtype=storage_dtype, proxy_mode=proxy_mode,
            store_rows=uses.rows, store_proxies=uses.proxies,
        )
        self.warmup_epochs = int(warmup_epochs)
        self.loss_attr = loss_attr
        self.loss: VirtualClassLoss | None = None
        self._active = False  # MemVir epoch (past warm-up)
        self._in_step = False  # inside a training batch
        self._stored_this_step = False
        self.virtual_blocks = 0  # n of the latest step
        self.loss_classes = 0  # class count the loss saw in the latest step
        self._log_prefix = "memvir" if loss_attr is None else f"memvir/{loss_attr}"

    @property
    def num_steps(self) -> int:
        return self.memory.num_steps

    @property
    def step_gap(self) -> int:
        return self.memory.step_gap

    @property
    def state_key(self) -> str:
        """Key of the memory in ``checkpoint["callbacks"]``: ``"MemVirCallback"`` (as in checkpoints
        written before keys were per loss) when ``loss_attr`` is None, else one per ``loss_attr``."""
        if self.loss_attr is None:
            return type(self).__qualname__
        return self._generate_state_key(loss_attr=self.loss_attr)

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
        if PART_INPUTS[self.parts].mask_own_copies and not getattr(self.loss, "supports_logit_mask", False):
            raise ValueError(
                f"MemVirCallback: parts={self.parts!r} needs a loss that takes a logit mask, and "
                f"{type(self.loss).__name__} does not; use Softmax, NormSoftmax, CosFace, ArcFace, ProxyNCA "
                "or ProxyAnchor from memvir_pl.losses, or another value of parts."
            )
        self.loss.batch_expander = self.expand_batch
        self.loss_classes = self.loss.num_classes

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._detach()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """A failed fit skips ``teardown``: unhook the loss here, so a plain or new fit works after it."""
        self._detach()

    def _detach(self) -> None:
        """Remove this callback's expander from the loss and clear the per-step flags (the memory stays)."""
        if self.loss is not None and self.loss.batch_expander == self.expand_batch:
            self.loss.batch_expander = None
        self._active = self._in_step = self._stored_this_step = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Bring a restored memory (checkpoints load onto the CPU) to the module's device."""
        self.memory.to(pl_module.device)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        # per batch, not per epoch: a run resumed mid-epoch gets no on_train_epoch_start
        self._active = trainer.current_epoch >= self.warmup_epochs
        self._in_step = True
        self._stored_this_step = False

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._in_step = False
        pl_module.log(f"{self._log_prefix}/virtual_blocks", float(self.virtual_blocks), on_step=True, on_epoch=False)
        pl_module.log(f"{self._log_prefix}/num_classes", float(self.loss_classes), on_step=True, on_epoch=False)

    # ------------------------------------------------------------------ the rule
    def expand_batch(
        self, loss: VirtualClassLoss, embeddings: Tensor, labels: Tensor, proxies: Tensor
    ) -> tuple:
        """The loss's view of step t: current rows and proxies plus n memory blocks (as ``parts`` says).

        Args:
            embeddings: (B, D) current embeddings (with gradient).
            labels: (B,) labels in [0, C).
            proxies: (C*K, D) current proxies (with gradient).

        Returns:
            ``(embeddings, labels, proxies, num_classes, row_weights, logit_mask)``;
            with ``parts="full"``: embeddings ((n+1)B', D), labels (+ j*C for
            block j), proxies ((n+1)*C*K, D), class count (n+1)*C. ``row_weights``
            ((n+1)B',) is 1 for current rows and ``memory_weight`` for memory
            rows (``None`` when all are 1); ``logit_mask`` (rows, proxies) bool,
            True = removed from the row's logits, only for ``"no_own_virtual"``
            and ``"virtual_proxies_masked"`` (``None`` otherwise).
            Outside a MemVir training step, the inputs unchanged.
        """
        num_classes = loss.num_classes
        self.loss_classes = num_classes
        if not (self._active and self._in_step and loss.training):
            self.virtual_blocks = 0
            return embeddings, labels, proxies, num_classes, None, None
        if self._stored_this_step:
            raise RuntimeError(
                "MemVirCallback: the loss was called twice in one training step; MemVir stores one "
                "memory item per step. Compute the loss once per training_step (concatenate the batches)."
            )
        if self.memory.device is not None and self.memory.device != embeddings.device:  # restored on the CPU
            self.memory.to(embeddings.device)
        items = self.memory.recall()
        self.virtual_blocks = len(items)
        uses = PART_INPUTS[self.parts]
        rows = items if uses.rows else []  # the memory holds only the fields ``uses`` names (the rest are None)
        blocks = items if uses.proxies else []
        offset = num_classes if blocks else 0  # memory rows keep their real labels without virtual proxies
        out_embeddings = torch.cat([embeddings] + [m.embeddings.to(embeddings.dtype) for m in rows])
        out_labels = torch.cat([labels] + [m.labels + (j + 1) * offset for j, m in enumerate(rows)])
        out_proxies = torch.cat([proxies] + [m.proxies.to(proxies.dtype) for m in blocks])
        with torch.no_grad():
            self.memory.push(embeddings, labels, proxies, normalize=True)
        self._stored_this_step = True
        self.loss_classes = (len(blocks) + 1) * num_classes
        row_weights = logit_mask = None
        if self.memory_weight != 1.0 and rows:
            row_weights = torch.full((len(out_labels),), self.memory_weight, device=embeddings.device)
            row_weights[: len(labels)] = 1.0
        if uses.mask_own_copies and blocks:
            logit_mask = own_class_copies(out_labels, num_classes, len(blocks) + 1, loss.centers)
        return out_embeddings, out_labels, out_proxies, self.loss_classes, row_weights, logit_mask

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        return {"memory": self.memory.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.memory.load_state_dict(state_dict["memory"])

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Let the only MemVirCallback of a run read a checkpoint written before keys were per loss."""
        states = checkpoint.get("callbacks") or {}
        legacy = type(self).__qualname__
        alone = sum(isinstance(cb, MemVirCallback) for cb in trainer.callbacks) == 1
        if alone and self.state_key not in states and legacy in states:
            states[self.state_key] = states[legacy]


def own_class_copies(labels: Tensor, num_classes: int, num_blocks: int, centers: int = 1) -> Tensor:
    """Mask (B, num_blocks*C*K), True where a proxy is a copy of the row's real class from another block.

    Row i has label ``y + j*C`` (real class y, block j); proxy column p is
    centre ``p % K`` of class ``p // K``, i.e. real class ``(p // K) % C`` of
    block ``(p // K) // C``. Masked: same real class, other block. The row's
    own target (class y of block j) is never masked.
    """
    column_class = torch.arange(num_blocks * num_classes * centers, device=labels.device) // centers
    same_class = (labels % num_classes).unsqueeze(1) == (column_class % num_classes).unsqueeze(0)
    other_block = (labels // num_classes).unsqueeze(1) != (column_class // num_classes).unsqueeze(0)
    return same_class & other_block


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
