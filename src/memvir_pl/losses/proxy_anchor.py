"""Proxy-Anchor loss (Kim et al., CVPR 2020)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from memvir_pl.losses.base import ProxyLoss
from memvir_pl.losses.functional import check_positive, check_proxy_rows, cosine_matrix


def _log1p_sum_exp(z: Tensor, mask: Tensor) -> Tensor:
    """Per column of z (B, P): log(1 + Σ_{rows where mask} exp(z)), computed stably; (P,)."""
    z = z.masked_fill(~mask, float("-inf"))
    return torch.cat([z.new_zeros(1, z.shape[1]), z]).logsumexp(dim=0)


class ProxyAnchor(ProxyLoss):
    """Proxy-Anchor: each proxy is an anchor pulling its batch positives and pushing the rest.

    ``loss = 1/|P⁺| Σ_{p∈P⁺} log(1 + Σ_{x∈X_p⁺} e^{−α(cos(x,p)−δ)})
    + 1/|P| Σ_{p∈P} log(1 + Σ_{x∈X_p⁻} e^{α(cos(x,p)+δ)})``, where P⁺ are
    the proxies with at least one positive in the batch and P is every proxy
    row passed in (virtual ones included).

    With virtual classes (MemVir), ``negative_mean`` says what the negative sum is
    divided by: ``"all_proxies"`` (default) is the formula above, |P| = C(N+1) for N
    past proxy blocks, so each real proxy's own negative gradient shrinks by
    1/(N+1) while its positive one does not; ``"real_proxies"`` divides by the
    loss's own C, so each virtual proxy adds a negative term (as a virtual class
    adds a logit to a softmax loss) and a real proxy's terms weigh as without
    virtual classes. Without virtual classes the two are the same loss.

    Args:
        num_classes: C.
        embedding_dim: D.
        alpha: scale α (default 32).
        delta: margin δ (default 0.1).
        negative_mean: ``"all_proxies"`` or ``"real_proxies"`` (see above).
    """

    supports_logit_mask = True
    NEGATIVE_MEANS = ("all_proxies", "real_proxies")

    def __init__(
        self, num_classes: int, embedding_dim: int, alpha: float = 32.0, delta: float = 0.1,
        negative_mean: str = "all_proxies",
    ) -> None:
        super().__init__(num_classes, embedding_dim)
        self.alpha = check_positive("ProxyAnchor", "alpha", alpha)
        self.delta = float(delta)
        if negative_mean not in self.NEGATIVE_MEANS:
            raise ValueError(
                f"ProxyAnchor: negative_mean must be one of {self.NEGATIVE_MEANS}, got {negative_mean!r}; "
                "'all_proxies' averages the negative terms over every proxy row (virtual ones included), "
                "'real_proxies' over the loss's own classes."
            )
        self.negative_mean = negative_mean

    def reset_parameters(self) -> None:
        """Kaiming-normal (fan_out) on the class-first (C, D) tensor, as the Proxy-Anchor repository.

        fan_out is C here: N(0, 2/C) (the official MemVir code has no Proxy-Anchor).
        """
        nn.init.kaiming_normal_(self.proxies, mode="fan_out")

    def compute(
        self, embeddings: Tensor, labels: Tensor, proxies: Tensor, num_classes: int,
        row_weights: Tensor | None = None, logit_mask: Tensor | None = None,
    ) -> Tensor:
        """Row weights w_x multiply each row's exp terms: Σ_x w_x e^{...} inside both logs.

        ``logit_mask`` (B, P) True drops row x from proxy p's negatives (p's positives never are masked).
        """
        check_proxy_rows(type(self).__name__, proxies, num_classes, self.centers)
        cosine = cosine_matrix(embeddings, proxies)
        positive = torch.zeros_like(cosine, dtype=torch.bool).scatter_(1, labels.unsqueeze(1), True)
        log_w = 0.0 if row_weights is None else row_weights.log().unsqueeze(1)
        pos_term = _log1p_sum_exp(-self.alpha * (cosine - self.delta) + log_w, positive)
        negative = ~positive if logit_mask is None else ~positive & ~logit_mask
        neg_term = _log1p_sum_exp(self.alpha * (cosine + self.delta) + log_w, negative)
        proxies_with_positives = positive.any(dim=0).sum().clamp_min(1)
        negative_count = num_classes if self.negative_mean == "all_proxies" else self.num_classes
        return pos_term.sum() / proxies_with_positives + neg_term.sum() / negative_count

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, alpha={self.alpha}, delta={self.delta}, negative_mean={self.negative_mean!r}"
