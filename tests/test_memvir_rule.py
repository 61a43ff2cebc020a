"""MemVir's rule (DESIGN.md section 1) against a reference written the most direct way."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from memvir_pl import MemVirCallback
from tests.memvir_helpers import CosineSoftmax, LinearEmbedder, fixed_data, quiet_trainer

N, M, U = 3, 4, 1
B, D, C, IN_DIM = 8, 6, 5, 10
STEPS_PER_EPOCH, EPOCHS = 100, 3


def reference_run(model: LinearEmbedder, accumulate: int = 1) -> list[dict]:
    """Plain loop: a list of past items, indices by explicit arithmetic, no ring buffer.

    With ``accumulate`` > 1 the optimiser steps every ``accumulate`` batches on
    the mean of their losses (Lightning's gradient accumulation); every batch
    is still one MemVir step.
    """
    net, proxies = model.net, model.loss.proxies
    opt = torch.optim.SGD(list(net.parameters()) + [proxies], lr=model.lr, momentum=0.9)
    past: list[tuple] = []  # (embeddings, labels, proxies) of steps t-L .. t-1, oldest first
    records = []
    x_all, y_all = model.dataset.tensors
    for epoch in range(1, EPOCHS + 1):
        for i in range(STEPS_PER_EPOCH):
            x, y = x_all[i * B:(i + 1) * B], y_all[i * B:(i + 1) * B]
            emb = F.normalize(net(x), dim=1)
            embs, labels, blocks = [emb], [y], [proxies]
            if epoch > U:
                L = len(past)
                n = min(N, L // (M + 1))
                for j in range(1, n + 1):
                    e_old, y_old, p_old = past[L - j * (M + 1)]  # step t - j(M+1)
                    embs.append(e_old)
                    labels.append(y_old + j * C)
                    blocks.append(p_old)
            e, yy, p = torch.cat(embs), torch.cat(labels), torch.cat(blocks)
            logits = model.loss.scale * F.normalize(e, dim=1) @ F.normalize(p, dim=1).T
            loss = F.cross_entropy(logits, yy)
            records.append({"num_classes": p.shape[0], "labels": yy, "proxies": p.detach().clone(),
                            "loss": loss.detach()})
            (loss / accumulate).backward()
            if epoch > U:
                past.append((emb.detach().clone(), y.clone(), proxies.detach().clone()))
                del past[: max(0, len(past) - N * (M + 1))]
            if (i + 1) % accumulate == 0:
                opt.step()
                opt.zero_grad()
    return records


@pytest.mark.parametrize("accumulate", [1, 2])
def test_rule_matches_direct_reference_for_300_steps(accumulate):
    data = fixed_data(STEPS_PER_EPOCH, B, IN_DIM, C)
    model = LinearEmbedder(CosineSoftmax(C, D), IN_DIM, data, B)
    reference_model = copy.deepcopy(model)
    expected = reference_run(reference_model, accumulate)

    callback = MemVirCallback(num_steps=N, step_gap=M, warmup_epochs=U)
    trainer = quiet_trainer(max_epochs=EPOCHS, callbacks=[callback], accumulate_grad_batches=accumulate)
    trainer.fit(model)
    got = model.loss.calls

    assert len(got) == len(expected) == EPOCHS * STEPS_PER_EPOCH
    blocks_seen = []
    for step, (g, e) in enumerate(zip(got, expected, strict=True)):
        n = e["num_classes"] // C - 1
        blocks_seen.append(n)
        assert g["num_classes"] == (n + 1) * C, step
        assert torch.equal(g["labels"], e["labels"]), step
        torch.testing.assert_close(g["proxies"], e["proxies"], rtol=0, atol=1e-6, msg=f"step {step}")
        torch.testing.assert_close(g["loss"], e["loss"], rtol=0, atol=1e-6, msg=f"step {step}")
    # the curriculum: nothing in warm-up, a new block every M+1 steps, then N blocks
    first = STEPS_PER_EPOCH
    assert blocks_seen[:first] == [0] * first
    assert blocks_seen[first:first + 5] == [0] * 5 and blocks_seen[first + 5] == 1
    assert blocks_seen[first + 10] == 2 and blocks_seen[first + 15] == 3 and max(blocks_seen) == N
    assert callback.memory.filled == N * (M + 1)
