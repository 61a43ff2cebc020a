"""VirtualClassMemory: the ring buffer behind MemVir's virtual classes.

Each training step after warm-up stores one item: the step's L2-normalised
embeddings (B, D), their labels (B,) and the proxy matrix (P, D) as it was in
that step's forward (P = num_classes * centers). The buffer keeps the last
``capacity = num_steps * (step_gap + 1)`` items, first in first out, and is
never reset.

With L items stored, the step being computed (call it t; items t-1 ... t-L
are stored) uses n = min(N, floor(L / (M+1))) past items, those of steps
t-(M+1), t-2(M+1), ..., t-n(M+1) (N = num_steps, M = step_gap).

Proxy storage has two modes:

``"exact"``
    every item keeps its own proxy snapshot: ``capacity`` snapshots of (P, D),
    exactly the paper's rule (SOP, P=11,318, D=512, N=5, M=100: ~11.7 GB fp32).

``"saving"``
    number the stored items s = 0, 1, 2, ... in push order. A proxy snapshot
    is written only when s is a multiple of (M+1), into slot
    (s // (M+1)) mod (N+1); item s is paired with snapshot s // (M+1), i.e.
    the proxies of step (M+1)*floor(s/(M+1)), between 0 and M steps older than
    its own. Only N+1 snapshots are held. On every (M+1)-th step (t a multiple
    of M+1) all recalled items are snapshot steps, so the result is exact;
    in between, virtual proxies are up to M steps staler than the paper's.

Buffers are allocated on the first push, on the device and with the shape of
what is pushed (the largest batch so far; a smaller batch, e.g. the last one of
an epoch, fills part of a slot and remembers its size). No Python queues and no
per-step allocation: a push copies into preallocated storage.

A memory can keep only one half of each item: ``store_rows=False`` keeps no
embeddings or labels, ``store_proxies=False`` no proxy snapshots (a recalled
item's unkept fields are ``None``). Which steps are recalled does not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

PROXY_MODES = ("exact", "saving")


@dataclass(frozen=True)
class MemoryItem:
    """One recalled past step: embeddings (b, D), labels (b,), proxies (P, D); views into the buffer.

    ``embeddings`` and ``labels`` are ``None`` when the memory keeps no rows
    (``store_rows=False``), ``proxies`` when it keeps no proxy snapshots
    (``store_proxies=False``).
    """

    embeddings: Tensor | None
    labels: Tensor | None
    proxies: Tensor | None


class VirtualClassMemory:
    """Fixed-capacity ring buffer of past steps' embeddings, labels and proxy snapshots.

    Args:
        num_steps: N, the most past steps used at once (virtual-class blocks).
        step_gap: M, the number of steps skipped between two used steps.
        storage_dtype: dtype of stored embeddings and proxies (e.g. ``torch.bfloat16``);
            ``None`` uses the proxies' dtype (float32 for float32 parameters, also under autocast).
        proxy_mode: ``"exact"`` (one proxy snapshot per item) or ``"saving"``
            (N+1 snapshots; see the module docstring for the exact rule).
        store_rows: keep each step's embeddings and labels (False: only what
            the proxies need; recalled items have ``embeddings = labels = None``).
        store_proxies: keep proxy snapshots (False: recalled items have
            ``proxies = None``). At least one of the two must be True.
    """

    def __init__(
        self,
        num_steps: int,
        step_gap: int,
        storage_dtype: torch.dtype | str | None = None,
        proxy_mode: str = "exact",
        store_rows: bool = True,
        store_proxies: bool = True,
    ) -> None:
        if int(num_steps) != num_steps or num_steps < 1:
            raise ValueError(f"VirtualClassMemory: num_steps (N) must be an integer >= 1, got {num_steps!r}.")
        if int(step_gap) != step_gap or step_gap < 0:
            raise ValueError(f"VirtualClassMemory: step_gap (M) must be an integer >= 0, got {step_gap!r}.")
        if proxy_mode not in PROXY_MODES:
            raise ValueError(
                f"VirtualClassMemory: proxy_mode must be one of {PROXY_MODES}, got {proxy_mode!r}."
            )
        if not (store_rows or store_proxies):
            raise ValueError(
                "VirtualClassMemory: store_rows and store_proxies are both False, so nothing would be "
                "stored; keep at least one of them True."
            )
        self.num_steps = int(num_steps)
        self.step_gap = int(step_gap)
        self.storage_dtype = _as_dtype(storage_dtype)
        self.proxy_mode = proxy_mode
        self.store_rows = bool(store_rows)
        self.store_proxies = bool(store_proxies)
        self.capacity = self.num_steps * (self.step_gap + 1)
        self.pushes = 0
        self._embeddings: Tensor | None = None  # (capacity, B_max, D); stays None without store_rows
        self._labels: Tensor | None = None  # (capacity, B_max); stays None without store_rows
        self._sizes = [0] * self.capacity  # rows of the step pushed into each slot
        self._proxies: Tensor | None = None  # (capacity or N+1, P, D); stays None without store_proxies

    # ------------------------------------------------------------------ queries
    @property
    def filled(self) -> int:
        """L, the number of items held (at most ``capacity``)."""
        return min(self.pushes, self.capacity)

    @property
    def num_proxy_slots(self) -> int:
        """Proxy snapshots held: ``capacity`` in exact mode, N+1 in saving mode."""
        return self.capacity if self.proxy_mode == "exact" else self.num_steps + 1

    def num_blocks(self) -> int:
        """n = min(N, floor(L / (M+1))): past steps the next step will use."""
        return min(self.num_steps, self.filled // (self.step_gap + 1))

    def recall(self) -> list[MemoryItem]:
        """Items of steps t-(M+1), ..., t-n(M+1) (t = the step about to be pushed), nearest first.

        Fields this memory does not store are ``None`` (see :class:`MemoryItem`).
        """
        items = []
        for j in range(1, self.num_blocks() + 1):
            step = self.pushes - j * (self.step_gap + 1)
            slot = step % self.capacity
            size = self._sizes[slot]
            embeddings = labels = proxies = None
            if self.store_rows:
                assert self._embeddings is not None and self._labels is not None
                embeddings, labels = self._embeddings[slot, :size], self._labels[slot, :size]
            if self.store_proxies:
                assert self._proxies is not None
                proxies = self._proxies[self._proxy_slot(step)]
            items.append(MemoryItem(embeddings, labels, proxies))
        return items

    @property
    def device(self) -> torch.device | None:
        """Device of the buffers; ``None`` before the first push (nothing allocated)."""
        return next((t.device for t in self._buffers() if t is not None), None)

    def nbytes(self) -> int:
        """Bytes held by the allocated buffers (0 before the first push)."""
        return sum(t.numel() * t.element_size() for t in self._buffers() if t is not None)

    @staticmethod
    def bank_bytes(
        num_steps: int,
        step_gap: int,
        batch_size: int,
        embedding_dim: int,
        num_proxies: int,
        proxy_mode: str = "exact",
        dtype: torch.dtype = torch.float32,
        store_rows: bool = True,
        store_proxies: bool = True,
    ) -> int:
        """Bytes a full bank would hold, computed without allocating it.

        Arguments as the constructor's, plus the bank's shapes: ``batch_size`` B rows of
        ``embedding_dim`` D per item and ``num_proxies`` P proxy rows per snapshot; ``dtype`` is
        the storage dtype (labels are int64). Rows: N(M+1)·B·(D·element + 8) bytes when
        ``store_rows``; proxies: (N(M+1) or N+1)·P·D·element bytes when ``store_proxies``.
        """
        capacity = num_steps * (step_gap + 1)
        snapshots = capacity if proxy_mode == "exact" else num_steps + 1
        element = torch.empty((), dtype=dtype).element_size()
        label = torch.empty((), dtype=torch.long).element_size()
        rows = capacity * batch_size * (embedding_dim * element + label) if store_rows else 0
        proxies = snapshots * num_proxies * embedding_dim * element if store_proxies else 0
        return rows + proxies

    # ------------------------------------------------------------------ update
    def push(self, embeddings: Tensor, labels: Tensor, proxies: Tensor, normalize: bool = False) -> None:
        """Store one step: embeddings (B, D), labels (B,), proxies (P, D), all detached.

        Copies into the preallocated slot of the oldest item (L2-normalising the
        embeddings on the way when ``normalize``); the caller must have used
        :meth:`recall` for this step before pushing. What the memory does not
        store (``store_rows`` / ``store_proxies``) is checked for shape and dropped.
        """
        if embeddings.ndim != 2 or labels.shape != embeddings.shape[:1] or proxies.ndim != 2:
            raise ValueError(
                "VirtualClassMemory.push expects embeddings (B, D), labels (B,) and proxies (P, D); "
                f"got {tuple(embeddings.shape)}, {tuple(labels.shape)} and {tuple(proxies.shape)}."
            )
        self._ensure_allocated(embeddings, proxies)
        step = self.pushes
        slot = step % self.capacity
        batch = embeddings.shape[0]
        if self._embeddings is not None and self._labels is not None:
            target = self._embeddings[slot, :batch]
            if normalize and target.dtype == embeddings.dtype:
                torch.nn.functional.normalize(embeddings.detach(), dim=1, out=target)
            elif normalize:
                target.copy_(torch.nn.functional.normalize(embeddings.detach(), dim=1))
            else:
                target.copy_(embeddings.detach())
            self._labels[slot, :batch].copy_(labels)
        self._sizes[slot] = batch
        if self._proxies is not None and (self.proxy_mode == "exact" or step % (self.step_gap + 1) == 0):
            self._proxies[self._proxy_slot(step)].copy_(proxies.detach())
        self.pushes += 1

    def reset(self) -> None:
        """Forget every item and free the buffers."""
        self.pushes = 0
        self._sizes = [0] * self.capacity
        self._embeddings = self._labels = self._proxies = None

    def to(self, device: torch.device | str) -> VirtualClassMemory:
        """Move the buffers to ``device`` (in place; nothing to do when already there); returns self.

        A checkpoint is loaded onto the CPU: :class:`~memvir_pl.MemVirCallback`
        calls this with the module's device before the memory is used.
        """
        if self.device is not None and self.device != torch.device(device):
            self._embeddings, self._labels, self._proxies = (
                None if t is None else t.to(device) for t in self._buffers()
            )
        return self

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-identically: settings, counters and buffers."""
        return {
            "num_steps": self.num_steps,
            "step_gap": self.step_gap,
            "proxy_mode": self.proxy_mode,
            "storage_dtype": _dtype_name(self.storage_dtype),
            "store_rows": self.store_rows,
            "store_proxies": self.store_proxies,
            "pushes": self.pushes,
            "sizes": torch.tensor(self._sizes, dtype=torch.long),
            "embeddings": self._embeddings,
            "labels": self._labels,
            "proxies": self._proxies,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; N, M, the proxy mode and the storage dtype must match this
        memory's, and the checkpoint must keep every half this memory stores (a half it keeps beyond
        those, e.g. the rows of a full memory resumed under ``parts="virtual_proxies"``, is dropped)."""
        saved = (state["num_steps"], state["step_gap"], state["proxy_mode"])
        if saved != (self.num_steps, self.step_gap, self.proxy_mode):
            raise ValueError(
                "VirtualClassMemory: the checkpoint's memory was made with (num_steps, step_gap, proxy_mode)="
                f"{saved}, this run uses {(self.num_steps, self.step_gap, self.proxy_mode)}; resume with the "
                "same MemVir settings, or start a new run (the memory cannot be re-indexed)."
            )
        if state["storage_dtype"] != _dtype_name(self.storage_dtype):
            raise ValueError(
                f"VirtualClassMemory: the checkpoint's memory was stored with storage_dtype={state['storage_dtype']}, "
                f"this run uses storage_dtype={_dtype_name(self.storage_dtype)} (None = the proxies' dtype); "
                "resume with the checkpoint's storage_dtype, or start a new run."
            )
        # a state without these two settings keeps both halves
        stored = (state.get("store_rows", True), state.get("store_proxies", True))
        if (self.store_rows and not stored[0]) or (self.store_proxies and not stored[1]):
            raise ValueError(
                f"VirtualClassMemory: the checkpoint's memory keeps (store_rows, store_proxies)={stored}, this "
                f"run needs {(self.store_rows, self.store_proxies)}: the half it lacks cannot be rebuilt. Resume "
                "with the same MemVir parts (MemVirCallback sets both from `parts`), or start a new run."
            )
        self.pushes = int(state["pushes"])
        self._sizes = [int(s) for s in state["sizes"]]
        # a half the checkpoint keeps but this memory does not use is dropped
        self._embeddings = state["embeddings"] if self.store_rows else None
        self._labels = state["labels"] if self.store_rows else None
        self._proxies = state["proxies"] if self.store_proxies else None

    # ------------------------------------------------------------------ internals
    def _proxy_slot(self, step: int) -> int:
        if self.proxy_mode == "exact":
            return step % self.capacity
        return (step // (self.step_gap + 1)) % (self.num_steps + 1)

    def _buffers(self) -> tuple[Tensor | None, ...]:
        return self._embeddings, self._labels, self._proxies

    def _ensure_allocated(self, embeddings: Tensor, proxies: Tensor) -> None:
        dtype = self.storage_dtype or proxies.dtype  # the parameters' precision, also under autocast
        batch, dim = embeddings.shape
        if self.device is None:
            device = embeddings.device
            if self.store_rows:
                self._embeddings = torch.zeros(self.capacity, batch, dim, dtype=dtype, device=device)
                self._labels = torch.zeros(self.capacity, batch, dtype=torch.long, device=device)
            if self.store_proxies:
                self._proxies = torch.zeros(self.num_proxy_slots, *proxies.shape, dtype=dtype, device=device)
            return
        if self.device != embeddings.device:
            self.to(embeddings.device)
        stored = self._embeddings if self._embeddings is not None else self._proxies
        assert stored is not None
        stored_proxies = "(not stored)" if self._proxies is None else tuple(self._proxies.shape[1:])
        if stored.shape[2] != dim or (self._proxies is not None and self._proxies.shape[1:] != proxies.shape):
            raise ValueError(
                f"VirtualClassMemory: stored items have embedding size {stored.shape[2]} and proxies "
                f"{stored_proxies}, the new step has {dim} and {tuple(proxies.shape)}; the model or class "
                "count changed mid-run. Call reset() (or start a new run) when changing them."
            )
        if self._embeddings is not None and self._labels is not None and batch > self._embeddings.shape[1]:
            # a larger batch than any so far: widen every slot once
            grow = batch - self._embeddings.shape[1]
            self._embeddings = torch.cat([self._embeddings, self._embeddings.new_zeros(self.capacity, grow, dim)], 1)
            self._labels = torch.cat([self._labels, self._labels.new_zeros(self.capacity, grow)], 1)


def _dtype_name(dtype: torch.dtype | None) -> str | None:
    """How a storage dtype is saved in a checkpoint: ``"torch.bfloat16"``, or ``None`` (the proxies' dtype)."""
    return None if dtype is None else str(dtype)


def _as_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """Accept ``torch.bfloat16``, ``"bfloat16"`` or ``"torch.bfloat16"`` (handy from YAML)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.")
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(f"VirtualClassMemory: storage_dtype must be a floating torch dtype name, got {dtype!r}.")
    return value
