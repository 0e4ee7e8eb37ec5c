"""The alignment head and loss on its own: pooling, per-scale terms, detach, masking, latent mode."""

import torch

from types import SimpleNamespace

import pytest

from mingexp.errors import ConfigError
from mingexp.models.align.base import AlignmentWidths, pool_to_grid
from mingexp.models.align.latent import LatentAlignment
from mingexp.models.align.semantic import SemanticAlignment

WIDTHS = AlignmentWidths(dit=8, connector=5, mllm=7, latent=3, patch_size=2)
FLOW = torch.zeros(2, 3, 8, 8)  # unused by the semantic reading: the call signature is shared


def semantic(scales, **kw):
    return SemanticAlignment(WIDTHS, scales, **kw)


def cond(per_scale):
    return SimpleNamespace(per_scale=per_scale, mllm={})


def test_pool_to_grid_averages_blocks():
    # a 4×4 grid of tokens whose value is its row index, pooled to 2×2
    tokens = torch.arange(4.0).repeat_interleave(4).view(1, 16, 1)
    pooled = pool_to_grid(tokens, (4, 4), 2)
    assert pooled.view(2, 2).tolist() == [[0.5, 0.5], [2.5, 2.5]]
    # a coarser grid than the scale is replicated
    assert pool_to_grid(torch.ones(1, 4, 3), (2, 2), 4).shape == (1, 16, 3)


def test_semantic_terms_per_scale_and_detach():
    torch.manual_seed(0)
    align = semantic([2, 4], detach_target=True)
    h = torch.randn(2, 16, 8, requires_grad=True)
    targets = {2: torch.randn(2, 4, 5, requires_grad=True), 4: torch.randn(2, 16, 5, requires_grad=True)}
    losses = align(h, (4, 4), cond(targets), FLOW)
    assert set(losses) == {2, 4}
    sum(losses.values()).backward()
    assert h.grad is not None and targets[2].grad is None and targets[4].grad is None
    # mse against the head's own output is zero
    with torch.no_grad():
        exact = {2: align.head(pool_to_grid(h, (4, 4), 2)), 4: align.head(pool_to_grid(h, (4, 4), 4))}
    assert all(v.item() < 1e-10 for v in align(h, (4, 4), cond(exact), FLOW).values())


def test_undetached_target_receives_gradient():
    align = semantic([2], detach_target=False)
    target = torch.randn(1, 4, 5, requires_grad=True)
    align(torch.randn(1, 16, 8), (4, 4), cond({2: target}), FLOW)[2].backward()
    assert target.grad is not None


def test_dropped_rows_are_left_out():
    torch.manual_seed(0)
    align = semantic([2])
    h, t = torch.randn(2, 16, 8), torch.randn(2, 4, 5)
    both = align(h, (4, 4), cond({2: t}), FLOW)[2]
    first = align(h, (4, 4), cond({2: t}), FLOW, keep=torch.tensor([1.0, 0.0]))[2]
    only_first = align(h[:1], (4, 4), cond({2: t[:1]}), FLOW)[2]
    assert torch.allclose(first, only_first) and not torch.allclose(first, both)


def test_cosine_distance_is_scale_invariant():
    align = semantic([2], distance="cosine")
    h, t = torch.randn(1, 16, 8), torch.randn(1, 4, 5)
    assert torch.allclose(align(h, (4, 4), cond({2: t}), FLOW)[2], align(h, (4, 4), cond({2: 10 * t}), FLOW)[2])


def test_latent_mode_unpatchifies_and_pools():
    torch.manual_seed(0)
    align = LatentAlignment(WIDTHS, [1, 2])
    assert align.target_width == 3 * 2 * 2  # one 2×2 patch of 3 latent channels per token
    h = torch.randn(2, 16, 8)  # 4×4 patches of 2×2 → an 8×8 latent
    flow_target = torch.randn(2, 3, 8, 8)
    losses = align(h, (4, 4), cond({}), flow_target)
    assert set(losses) == {1, 2} and all(torch.isfinite(v) for v in losses.values())


def test_the_semantic_target_picks_its_width_and_bad_choices_name_the_key():
    assert semantic([2], target="mllm").target_width == 7
    with pytest.raises(ConfigError, match=r"model.align.target='dit': use one of \('connector', 'mllm'\)"):
        semantic([2], target="dit")
    with pytest.raises(ConfigError, match=r"model.align.distance='l1'"):
        LatentAlignment(WIDTHS, [2], distance="l1")
