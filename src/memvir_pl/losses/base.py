"""The interface MemVir needs from a loss, and the base of our proxy losses.

A proxy loss is a function f(embeddings (B, D), labels (B,), proxies (C*K, D),
num_classes C) -> scalar. Because nothing in f is tied to the loss's own
parameter, MemVir can hand it more rows, more labels and more proxy blocks
(virtual classes) without any change to the loss. Proxies are class-first:
row ``c * K + k`` is centre ``k`` of class ``c``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn

from memvir_pl.losses.distributed import gather_batch
from memvir_pl.losses.functional import init_dimension_first_

# (loss, embeddings (B, D), labels (B,), proxies (C*K, D)) ->
# (embeddings (B', D), labels (B',), proxies (C'*K, D), num_classes C'
#  [, row_weights (B',) or None[, logit_mask (B', C'*K) bool or None]])
BatchExpander = Callable[["VirtualClassLoss", Tensor, Tensor, Tensor], tuple]

# The input checks that read values (and so wait for the device) run on this many first calls, then every
# ``check_every``-th call.
FIRST_CHECKED_CALLS = 10


class VirtualClassLoss(nn.Module, ABC):
    """A loss that accepts virtual classes: ours (:class:`ProxyLoss`) and :class:`PMLAdapter`.

    Subclasses set ``num_classes``, ``embedding_dim`` and ``centers`` and define
    :meth:`class_proxies` and :meth:`loss_from`. ``batch_expander`` is the hook
    through which :class:`~memvir_pl.MemVirCallback` adds memory rows; ``None``
    means plain training. Under DDP (``gather_across_ranks``) every rank
    computes the loss of the global batch, so losses that do not decompose
    over rows (Proxy-Anchor) match one process on the concatenated batch.

    Input checks: shapes and dtypes on every call (free); label range and
    finiteness, which read values and so make the host wait for the device,
    on the first :data:`FIRST_CHECKED_CALLS` calls and then every
    ``check_every``-th call (default 100; 1 = every call, for debugging).
    ``check_inputs = False`` turns all checks off.

    ``supports_logit_mask``: whether :meth:`loss_from` takes a ``logit_mask``
    (needed by ``MemVirCallback(parts="no_own_virtual")`` and ``"virtual_proxies_masked"``).
    """

    num_classes: int
    embedding_dim: int
    centers: int
    supports_logit_mask = False

    def __init__(self) -> None:
        super().__init__()
        self.batch_expander: BatchExpander | None = None
        self.gather_across_ranks = True
        self.check_inputs = True
        self.check_every = 100
        self._calls = 0  # forward calls so far (schedules the value checks)

    @abstractmethod
    def class_proxies(self) -> Tensor:
        """The proxies as a differentiable (num_classes * centers, D) class-first tensor."""

    @abstractmethod
    def loss_from(
        self, embeddings: Tensor, labels: Tensor, proxies: Tensor, num_classes: int,
        row_weights: Tensor | None = None, logit_mask: Tensor | None = None,
    ) -> Tensor:
        """The scalar loss of embeddings (B, D), labels (B,) in [0, num_classes), proxies (num_classes*K, D).

        ``row_weights`` (B,) >= 0 weighs the embedding rows; ``None`` = all rows equal (the paper).
        ``logit_mask`` (B, num_classes*K) bool removes proxy p from row i's logits where True (never
        a row's target); ``None`` = nothing removed. Only where ``supports_logit_mask``.
        """

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Loss of a batch: embeddings (B, D), integer labels (B,) in [0, num_classes)."""
        if self.check_inputs:
            name = type(self).__name__
            check_shapes(name, embeddings, labels, self.embedding_dim)
            if self._value_checks_due():
                check_values(name, embeddings, labels, self.num_classes)
        if self.gather_across_ranks:
            embeddings, labels = gather_batch(embeddings, labels)
        proxies = self.class_proxies()
        num_classes = self.num_classes
        extra: list = []
        if self.batch_expander is not None:
            embeddings, labels, proxies, num_classes, *extra = self.batch_expander(self, embeddings, labels, proxies)
        row_weights, logit_mask = (extra + [None, None])[:2]
        return self.loss_from(embeddings, labels, proxies, num_classes, row_weights=row_weights, logit_mask=logit_mask)

    def _value_checks_due(self) -> bool:
        """Count this call; True on the first FIRST_CHECKED_CALLS calls and then every ``check_every``-th."""
        if int(self.check_every) != self.check_every or self.check_every < 1:
            raise ValueError(
                f"{type(self).__name__}: check_every must be an integer >= 1 (1 = check every call), "
                f"got {self.check_every!r}; set check_inputs = False to turn the checks off."
            )
        call, self._calls = self._calls, self._calls + 1
        return call < FIRST_CHECKED_CALLS or call % self.check_every == 0


def check_shapes(loss_name: str, embeddings: Tensor, labels: Tensor, embedding_dim: int) -> None:
    """Raise ``ValueError`` on wrong shapes or label dtype; reads no values (no device sync)."""
    if embeddings.ndim != 2 or embeddings.shape[1] != embedding_dim:
        raise ValueError(
            f"{loss_name}: embeddings must have shape (batch, {embedding_dim}), got {tuple(embeddings.shape)}; "
            f"set the loss's embedding_dim to the model's output size."
        )
    if labels.ndim != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"{loss_name}: labels must have shape ({embeddings.shape[0]},) to match the embeddings, "
            f"got {tuple(labels.shape)}."
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"{loss_name}: labels must be integers, got dtype {labels.dtype}.")


def check_values(loss_name: str, embeddings: Tensor, labels: Tensor, num_classes: int) -> None:
    """Raise ``ValueError`` on labels outside [0, num_classes) or non-finite embeddings.

    One host read (device sync) of label min, max and whether the embeddings' sum is finite (a NaN or
    Inf makes it non-finite; ~100x cheaper than ``isfinite`` per element). Only when it is not are the
    non-finite values counted, which also clears a sum that merely overflowed.
    """
    finite_sum = torch.isfinite(embeddings.sum(dtype=torch.float32)).long()
    if labels.numel():
        low, high, finite = torch.stack([labels.min().long(), labels.max().long(), finite_sum]).tolist()
        if low < 0 or high >= num_classes:
            bad = low if low < 0 else high
            raise ValueError(
                f"{loss_name}: labels must lie in [0, {num_classes}) (num_classes={num_classes}), "
                f"got {bad}; remap the dataset's labels to 0..{num_classes - 1} or raise num_classes."
            )
    else:
        finite = int(finite_sum)
    bad_values = 0 if finite else int((~torch.isfinite(embeddings)).sum())
    if bad_values:
        raise ValueError(
            f"{loss_name}: embeddings contain NaN or Inf ({bad_values} values); "
            f"check the learning rate, mixed-precision settings and the input data."
        )


class ProxyLoss(VirtualClassLoss):
    """Base of our proxy losses: owns ``proxies`` (num_classes * centers, embedding_dim).

    Subclasses implement :meth:`compute`; it always runs in float32 with
    autocast disabled, so logits and loss keep full precision under AMP.
    """

    def __init__(self, num_classes: int, embedding_dim: int, centers: int = 1) -> None:
        super().__init__()
        for name, value in (("num_classes", num_classes), ("embedding_dim", embedding_dim), ("centers", centers)):
            if int(value) != value or value < 1:
                raise ValueError(f"{type(self).__name__}: {name} must be a positive integer, got {value!r}.")
        self.num_classes = int(num_classes)
        self.embedding_dim = int(embedding_dim)
        self.centers = int(centers)
        self.proxies = nn.Parameter(torch.empty(self.num_classes * self.centers, self.embedding_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-uniform (a=sqrt(5)) on the (D, C*K) layout, as the official MemVir Norm-SoftMax.

        That code stores proxies as (D, C), so the fan is C: U(-1/sqrt(C*K), 1/sqrt(C*K)), std
        1/sqrt(3*C*K) (CARS196, C=98: 0.0583); the values are the official tensor's transpose for
        the same random state. The official repository publishes Norm-SoftMax and Proxy-NCA only;
        Softmax, CosFace and ArcFace (the paper's other softmax variants) use this same rule.
        """
        init_dimension_first_(self.proxies, partial(nn.init.kaiming_uniform_, a=math.sqrt(5)))

    def class_proxies(self) -> Tensor:
        return self.proxies

    def loss_from(
        self, embeddings: Tensor, labels: Tensor, proxies: Tensor, num_classes: int,
        row_weights: Tensor | None = None, logit_mask: Tensor | None = None,
    ) -> Tensor:
        if logit_mask is not None and not self.supports_logit_mask:
            raise ValueError(
                f"{type(self).__name__} takes no logit mask (supports_logit_mask is False); use a loss that "
                "does (Softmax, NormSoftmax, CosFace, ArcFace, ProxyNCA, ProxyAnchor) or no mask."
            )
        extras: dict[str, Tensor] = {}  # only what is given: a compute without these arguments keeps working
        if row_weights is not None:
            extras["row_weights"] = row_weights.float()
        if logit_mask is not None:
            extras["logit_mask"] = logit_mask
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            return self.compute(embeddings.float(), labels, proxies.float(), num_classes, **extras)

    @abstractmethod
    def compute(
        self, embeddings: Tensor, labels: Tensor, proxies: Tensor, num_classes: int,
        row_weights: Tensor | None = None,
    ) -> Tensor:
        """Scalar loss; embeddings (B, D) and proxies (num_classes*centers, D) are float32;
        ``row_weights`` (B,) float32 or ``None`` (equal rows). Subclasses with
        ``supports_logit_mask`` also take ``logit_mask`` (B, num_classes*centers) bool."""

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, centers={self.centers}"
