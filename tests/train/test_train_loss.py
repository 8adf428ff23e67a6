"""The masked loss: head gather == full logits, packing == no packing, global token normalisation."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from train_helpers import TINY  # noqa: E402

from sftprep.train.data import TrainExample, collate_packed, collate_padded, pack_best_fit_decreasing  # noqa: E402
from sftprep.train.loss import SFTLoss, block_causal_mask, full_logits_loss  # noqa: E402
from sftprep.train.model import tiny_llama  # noqa: E402

IGNORE = -100
VOCAB = 300


def random_examples(n: int, seed: int = 0, lo: int = 4, hi: int = 24) -> list[TrainExample]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(lo, hi))
        ids = rng.integers(3, VOCAB, size=k)
        targets = np.where(rng.random(k) < 0.4, np.roll(ids, -1), IGNORE)
        targets[-1] = IGNORE
        targets[int(rng.integers(0, k - 1))] = ids[0]  # at least one trained target
        out.append(TrainExample(ids.astype(np.int64), targets.astype(np.int64)))
    return out


def model(attn: str = "sdpa", seed: int = 0) -> torch.nn.Module:
    return tiny_llama(VOCAB, TINY, pad_id=0, eos_id=1, seed=seed, attn=attn)


def grads(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}


def assert_close_grads(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rtol: float) -> None:
    assert a.keys() == b.keys() and a
    for name in a:
        scale = b[name].abs().max().item() or 1.0
        assert (a[name] - b[name]).abs().max().item() <= rtol * scale, name


def test_block_causal_mask() -> None:
    seq = torch.tensor([[0, 0, 1, 1, 1]])
    m = block_causal_mask(seq)
    expected = [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 1, 1, 1],
    ]
    assert m.shape == (1, 1, 5, 5) and m[0, 0].int().tolist() == expected
    additive = block_causal_mask(seq, torch.float32)[0, 0]
    assert (additive[m[0, 0]] == 0).all() and (additive[~m[0, 0]] == torch.finfo(torch.float32).min).all()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_head_gather_equals_full_logits(attn: str) -> None:
    batch = collate_padded(random_examples(6), pad_id=0)
    m = model(attn)
    gathered = SFTLoss(m)(**batch.tensors())
    gathered.backward()
    g1 = grads(m)
    m.zero_grad()
    full = full_logits_loss(m, batch)
    full.backward()
    assert torch.allclose(gathered, full, rtol=1e-5), (gathered.item(), full.item())
    assert_close_grads(g1, grads(m), 1e-5)


def test_head_is_applied_only_to_trained_positions(monkeypatch: pytest.MonkeyPatch) -> None:
    from sftprep.train import loss as loss_module

    batch = collate_padded(random_examples(4), pad_id=0)
    m = model()
    rows: list[int] = []
    m.lm_head.register_forward_hook(lambda mod, inp, out: rows.append(inp[0].shape[0]))
    SFTLoss(m, fused=False)(**batch.tensors())
    fused = loss_module.linear_cross_entropy_sum
    monkeypatch.setattr(loss_module, "linear_cross_entropy_sum", lambda h, *a: rows.append(h.shape[0]) or fused(h, *a))
    SFTLoss(m)(**batch.tensors())
    assert rows == [batch.n_trainable] * 2 and batch.n_trainable < batch.padded_tokens


@pytest.mark.parametrize("bias", [False, True])
def test_chunked_head_cross_entropy_equals_the_plain_one(bias: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Several chunks (16 rows each), with and without a head bias: same loss and gradients."""
    from sftprep.train import fused_ce

    monkeypatch.setattr(fused_ce, "CHUNK_ELEMENTS", 16 * VOCAB)
    assert fused_ce.chunk_rows(VOCAB) == 16
    torch.manual_seed(0)
    n, h = 53, 32
    hidden = torch.randn(n, h, requires_grad=True)
    head = torch.nn.Linear(h, VOCAB, bias=bias)
    targets = torch.randint(0, VOCAB, (n,))
    plain = torch.nn.functional.cross_entropy(head(hidden), targets, reduction="sum")
    plain.backward()
    expected = [hidden.grad.clone(), head.weight.grad.clone(), *([head.bias.grad.clone()] if bias else [])]
    head.zero_grad(set_to_none=True)
    hidden.grad = None
    got = fused_ce.linear_cross_entropy_sum(hidden, head.weight, head.bias, targets)
    (got * 3).backward()  # an upstream gradient scales the stored ones
    assert torch.allclose(got, plain, rtol=1e-5)
    actual = [hidden.grad, head.weight.grad, *([head.bias.grad] if bias else [])]
    for a, e in zip(actual, expected):
        assert torch.allclose(a, 3 * e, rtol=1e-4, atol=1e-6)
    with torch.no_grad():  # evaluation: no gradient work, the same loss
        assert torch.allclose(fused_ce.linear_cross_entropy_sum(hidden, head.weight, head.bias, targets), plain)


def test_fused_and_plain_sft_loss_agree_under_bf16_autocast() -> None:
    batch = collate_padded(random_examples(5), pad_id=0)
    m = model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = SFTLoss(m)(**batch.tensors())
        plain = SFTLoss(m, fused=False)(**batch.tensors())
    assert fused.dtype == torch.float32 and torch.allclose(fused, plain, rtol=2e-2)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_token_losses_equal_unpacked(attn: str) -> None:
    examples = random_examples(9, seed=1)
    m = SFTLoss(model(attn))
    rows = pack_best_fit_decreasing([len(e) for e in examples], 48)
    assert any(len(r) > 1 for r in rows)
    packed = collate_packed([[examples[i] for i in r] for r in rows], pad_id=0)
    packed_losses = m.token_losses(packed)
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            alone = collate_padded([examples[i]], pad_id=0)
            expected = m.token_losses(alone)[0]
            got = packed_losses[r, at : at + len(examples[i])]
            assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (attn, r, i)
            at += len(examples[i])
    # and the packed loss is not what attention across examples would give
    crossed = collate_padded(
        [
            TrainExample(
                np.concatenate([examples[i].input_ids for i in rows[0]]),
                np.concatenate([examples[i].targets for i in rows[0]]),
            )
        ],
        pad_id=0,
    )
    if len(rows[0]) > 1:
        assert not torch.allclose(m.token_losses(crossed)[0], packed_losses[0, : crossed.input_ids.shape[1]])


def test_loss_is_summed_over_trained_tokens_only() -> None:
    examples = random_examples(3)
    m = SFTLoss(model())
    batch = collate_padded(examples, pad_id=0)
    per_token = m.token_losses(batch)
    assert (per_token[batch.targets == IGNORE] == 0).all()
    assert torch.allclose(m(**batch.tensors()), per_token.sum(), rtol=1e-5)
