"""VirtualClassMemory: ring indexing, smaller batches, the saving mode's rule, state, bytes."""

from __future__ import annotations

import pytest
import torch

from memvir_pl import VirtualClassMemory


def push_step(memory: VirtualClassMemory, step: int, batch: int = 4, dim: int = 3, proxies: int = 5) -> None:
    """Push an item whose every value is its step number, so recalls name their step."""
    memory.push(torch.full((batch, dim), float(step)), torch.full((batch,), step), torch.full((proxies, dim), float(step)))


def recalled_steps(memory: VirtualClassMemory) -> list[tuple[int, int]]:
    """(step of the embeddings, step of the proxy snapshot) of each recalled item."""
    return [(int(m.labels[0]), int(m.proxies[0, 0])) for m in memory.recall()]


def recalled_values(memory: VirtualClassMemory) -> list[tuple]:
    """Every recalled field as a nested list (``None`` where the memory does not store it)."""
    return [tuple(None if f is None else f.tolist() for f in (m.embeddings, m.labels, m.proxies))
            for m in memory.recall()]


ONE_HALF = [pytest.param(True, False, id="rows only"), pytest.param(False, True, id="proxies only")]


def test_exact_mode_recalls_steps_t_minus_j_gap_plus_one():
    N, M = 3, 2
    memory = VirtualClassMemory(N, M)
    for t in range(40):
        L = min(t, N * (M + 1))
        n = min(N, L // (M + 1))
        expected = [(t - j * (M + 1),) * 2 for j in range(1, n + 1)]
        assert recalled_steps(memory) == expected, t
        assert memory.num_blocks() == n
        push_step(memory, t)
    assert memory.filled == memory.capacity == 9


def test_saving_mode_follows_its_documented_rule():
    N, M = 3, 4
    memory = VirtualClassMemory(N, M, proxy_mode="saving")
    for t in range(60):
        n = min(N, min(t, N * (M + 1)) // (M + 1))
        got = recalled_steps(memory)
        assert [s for s, _ in got] == [t - j * (M + 1) for j in range(1, n + 1)]
        # item s is paired with the proxies of step (M+1)*floor(s/(M+1))
        assert [p for _, p in got] == [(M + 1) * (s // (M + 1)) for s, _ in got], t
        if t % (M + 1) == 0:  # on these steps the saving mode is exact
            assert all(s == p for s, p in got)
        push_step(memory, t)
    assert memory._proxies.shape[0] == N + 1


def test_smaller_and_larger_batches_keep_their_sizes():
    memory = VirtualClassMemory(2, 0)
    push_step(memory, 0, batch=4)
    push_step(memory, 1, batch=2)  # e.g. the last batch of an epoch
    items = memory.recall()
    assert [m.embeddings.shape[0] for m in items] == [2, 4]
    push_step(memory, 2, batch=6)  # a larger batch widens the slots once
    items = memory.recall()
    assert [m.embeddings.shape[0] for m in items] == [6, 2]
    assert [int(m.labels[0]) for m in items] == [2, 1]


@pytest.mark.parametrize(("store_rows", "store_proxies"), [(True, True), *ONE_HALF])
def test_state_dict_round_trip_continues_identically(store_rows, store_proxies):
    settings = dict(proxy_mode="saving", store_rows=store_rows, store_proxies=store_proxies)
    a = VirtualClassMemory(2, 1, **settings)
    for t in range(7):
        push_step(a, t, batch=4 if t % 3 else 2)
    b = VirtualClassMemory(2, 1, **settings)
    b.load_state_dict(a.state_dict())
    assert b.nbytes() == a.nbytes()
    for t in range(7, 12):
        assert recalled_values(a) == recalled_values(b) != []
        push_step(a, t)
        push_step(b, t)
    assert b.pushes == a.pushes == 12


@pytest.mark.parametrize(("store_rows", "store_proxies"), ONE_HALF)
def test_a_memory_keeps_only_the_half_it_is_asked_to(store_rows, store_proxies):
    N, M = 3, 2
    full = VirtualClassMemory(N, M)
    half = VirtualClassMemory(N, M, store_rows=store_rows, store_proxies=store_proxies)
    for t in range(25):
        assert half.num_blocks() == full.num_blocks() and half.filled == full.filled
        for got, expected in zip(half.recall(), full.recall(), strict=True):  # the full memory's values, bit for bit
            assert (got.embeddings is None, got.labels is None) == (not store_rows,) * 2
            assert (got.proxies is None) == (not store_proxies)
            for field in ("embeddings", "labels", "proxies"):
                if getattr(got, field) is not None:
                    assert torch.equal(getattr(got, field), getattr(expected, field)), (t, field)
        batch = 4 if t % 5 else 2  # smaller batches, as at the end of an epoch
        push_step(full, t, batch=batch)
        push_step(half, t, batch=batch)
    held = VirtualClassMemory.bank_bytes(N, M, 4, 3, 5, store_rows=store_rows, store_proxies=store_proxies)
    assert half.nbytes() == held < full.nbytes() == VirtualClassMemory.bank_bytes(N, M, 4, 3, 5)
    assert half.device == torch.device("cpu") and half.to("cpu") is half
    half.reset()
    assert (half.nbytes(), half.device, half.pushes, half.recall()) == (0, None, 0, [])


@pytest.mark.parametrize(("store_rows", "store_proxies"), ONE_HALF)
def test_a_memory_resumes_from_one_that_keeps_more_but_not_from_one_that_keeps_less(store_rows, store_proxies):
    full = VirtualClassMemory(2, 1)
    for t in range(4):
        push_step(full, t)
    half = VirtualClassMemory(2, 1, store_rows=store_rows, store_proxies=store_proxies)
    half.load_state_dict(full.state_dict())  # the unused half is dropped
    assert half.nbytes() < full.nbytes()
    kept = [tuple(f if keep else None for f, keep in zip(item, (store_rows, store_rows, store_proxies), strict=True))
            for item in recalled_values(full)]
    assert recalled_values(half) == kept != []
    with pytest.raises(ValueError, match=rf"\(store_rows, store_proxies\)=\({store_rows}, {store_proxies}\), this run "
                                         r"needs \(True, True\): the half it lacks cannot be rebuilt"):
        VirtualClassMemory(2, 1).load_state_dict(half.state_dict())


def test_checkpoint_without_the_store_settings_loads_as_a_full_memory():
    a = VirtualClassMemory(2, 1)
    for t in range(4):
        push_step(a, t)
    state = a.state_dict()
    del state["store_rows"], state["store_proxies"]  # a state that names neither keeps both halves
    b = VirtualClassMemory(2, 1)
    b.load_state_dict(state)
    assert recalled_values(b) == recalled_values(a) != []
    rows_only = VirtualClassMemory(2, 1, store_proxies=False)
    rows_only.load_state_dict(state)
    assert [item[2] for item in recalled_values(rows_only)] == [None, None]


def test_load_state_dict_with_other_settings_says_what_differs():
    a = VirtualClassMemory(2, 1)
    push_step(a, 0)
    with pytest.raises(ValueError, match=r"\(num_steps, step_gap, proxy_mode\)=\(2, 1, 'exact'\).*\(3, 1, 'exact'\)"):
        VirtualClassMemory(3, 1).load_state_dict(a.state_dict())


@pytest.mark.parametrize(("saved", "resumed"), [("bfloat16", "float32"), ("bfloat16", None), (None, "float32")])
def test_load_state_dict_with_another_storage_dtype_names_both(saved, resumed):
    a = VirtualClassMemory(2, 1, storage_dtype=saved)
    push_step(a, 0)
    b = VirtualClassMemory(2, 1, storage_dtype=resumed)
    with pytest.raises(ValueError, match=rf"storage_dtype={saved and 'torch.' + saved}, this run uses "
                                         rf"storage_dtype={resumed and 'torch.' + resumed}"):
        b.load_state_dict(a.state_dict())
    assert b.pushes == 0  # nothing restored
    VirtualClassMemory(2, 1, storage_dtype=saved).load_state_dict(a.state_dict())  # the same setting resumes


def test_storage_dtype_and_bytes():
    memory = VirtualClassMemory(2, 1, storage_dtype="bfloat16")
    push_step(memory, 0, batch=4, dim=3, proxies=5)
    assert memory._embeddings.dtype == memory._proxies.dtype == torch.bfloat16
    expected = VirtualClassMemory.bank_bytes(2, 1, 4, 3, 5, dtype=torch.bfloat16)
    assert memory.nbytes() == expected == 4 * (4 * (3 * 2 + 8)) + 4 * 5 * 3 * 2
    # one half only: 4 slots of 4 rows of 3 bf16 values and an int64 label; 4 snapshots of 5 x 3 bf16
    rows = VirtualClassMemory.bank_bytes(2, 1, 4, 3, 5, dtype=torch.bfloat16, store_proxies=False)
    proxies = VirtualClassMemory.bank_bytes(2, 1, 4, 3, 5, dtype=torch.bfloat16, store_rows=False)
    assert (rows, proxies) == (4 * (4 * (3 * 2 + 8)), 4 * 5 * 3 * 2)
    # SOP scale, N=5, M=100: exact mode ~11.7 GB of proxies, saving mode under 0.5 GB
    exact = VirtualClassMemory.bank_bytes(5, 100, 128, 512, 11318)
    saving = VirtualClassMemory.bank_bytes(5, 100, 128, 512, 11318, proxy_mode="saving")
    assert 11.6e9 < exact < 11.9e9 and saving < 0.5e9


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_steps": 0, "step_gap": 1}, "num_steps"),
        ({"num_steps": 2, "step_gap": -1}, "step_gap"),
        ({"num_steps": 2, "step_gap": 1, "proxy_mode": "tiny"}, "proxy_mode must be one of"),
        ({"num_steps": 2, "step_gap": 1, "storage_dtype": "int8"}, "storage_dtype"),
        ({"num_steps": 2, "step_gap": 1, "store_rows": False, "store_proxies": False}, "nothing would be stored"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VirtualClassMemory(**kwargs)


@pytest.mark.parametrize(("store_rows", "store_proxies"), [(True, True), *ONE_HALF])
def test_changed_embedding_size_is_refused(store_rows, store_proxies):
    memory = VirtualClassMemory(2, 1, store_rows=store_rows, store_proxies=store_proxies)
    push_step(memory, 0, dim=3)
    with pytest.raises(ValueError, match="embedding size 3"):
        push_step(memory, 1, dim=4)
