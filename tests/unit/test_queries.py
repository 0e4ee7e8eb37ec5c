"""Multi-scale query block: counts, boundary tokens, M-RoPE layout, grid encoding, validation."""

import pytest
import torch

from mingexp.errors import ConfigError
from mingexp.models.queries import (
    GridPositions,
    MultiScaleQueries,
    NoGridEncoding,
    RowPositions,
    SharedBoundary,
    build_layout,
    sincos_grid_encoding,
    validate_scales,
)

POSITIONS = {"grid": GridPositions(), "row": RowPositions()}


def test_default_scales_give_336_queries_and_342_block_tokens():
    q = MultiScaleQueries(32, [4, 8, 16])
    assert q.num_queries == 16 + 64 + 256
    assert q.layout.block_length == 342
    assert [sl.stop - sl.start for sl in q.layout.query_slices] == [16, 64, 256]
    assert q(3).shape == (3, 342, 32)


def test_per_scale_boundary_tokens_wrap_each_scale():
    q = MultiScaleQueries(8, [2, 3], grid_encoding=NoGridEncoding())
    block = q(1)[0]
    # [START_0, Q_0 (4), END_0, START_1, Q_1 (9), END_1]
    assert torch.equal(block[0], q.start[0]) and torch.equal(block[5], q.end[0])
    assert torch.equal(block[6], q.start[1]) and torch.equal(block[16], q.end[1])
    assert torch.equal(block[1:5], q.queries[0]) and torch.equal(block[7:16], q.queries[1])
    assert q.start.shape == (2, 8) and q.start.requires_grad


def test_shared_frozen_boundary_reproduces_release():
    start, end = torch.randn(8), torch.randn(8)
    q = MultiScaleQueries(8, [2, 3], boundary=SharedBoundary(trainable=False), boundary_init=(start, end))
    block = q(1)[0]
    assert q.start.shape == (1, 8) and not q.start.requires_grad
    for i in (0, 6):
        assert torch.allclose(block[i], start)
    for i in (5, 16):
        assert torch.allclose(block[i], end)


def test_grid_layout_positions():
    layout = build_layout([2, 3], GridPositions())
    pos = layout.positions
    assert pos.shape == (3, layout.block_length)
    # START of scale 2 at 0; its queries at t=1, h=1+i, w=1+j
    assert pos[:, 0].tolist() == [0, 0, 0]
    q0 = pos[:, layout.query_slices[0]]
    assert q0[0].tolist() == [1, 1, 1, 1]
    assert q0[1].tolist() == [1, 1, 2, 2]  # rows
    assert q0[2].tolist() == [1, 2, 1, 2]  # columns
    # cursor advances by s (the grid extent), END at 1 + 2 = 3, next START at 4
    assert pos[:, 5].tolist() == [3, 3, 3] and pos[:, 6].tolist() == [4, 4, 4]
    q1 = pos[:, layout.query_slices[1]]
    assert q1[1].reshape(3, 3)[:, 0].tolist() == [5, 6, 7]
    assert q1[2].reshape(3, 3)[0].tolist() == [5, 6, 7]


@pytest.mark.parametrize("position_layout", ["row", "grid"])
def test_layouts_are_qwens_own_image_positions(tiny_dir, position_layout):
    """Each scale sits between its boundary tokens as an image would: ``row`` as the released code's image of
    grid (1, 2, 2s²) (merged: one row of s²), ``grid`` as an image of (1, 2s, 2s) (s × s), both positioned by
    Qwen's own get_rope_index: the layouts must give exactly those ids."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_dir / "mllm").model
    cfg = model.config
    scales = [2, 3]
    layout = build_layout(scales, POSITIONS[position_layout])
    ids = []
    for s in scales:
        ids += [cfg.vision_start_token_id] + [cfg.image_token_id] * (s * s) + [cfg.vision_end_token_id]
    input_ids = torch.tensor([ids])
    grid = torch.tensor([[1, 2, 2 * s * s] if position_layout == "row" else [1, 2 * s, 2 * s] for s in scales])
    ref, _ = model.get_rope_index(input_ids, mm_token_type_ids=(input_ids == cfg.image_token_id).int(), image_grid_thw=grid)
    assert torch.equal(layout.positions, ref[:, 0])


@pytest.mark.parametrize("scales", [[16], [1], [3, 5], [8, 4, 2, 1]])
def test_any_list_of_positive_ints_works(scales):
    q = MultiScaleQueries(12, scales)
    assert q.num_queries == sum(s * s for s in scales)
    assert q(2).shape == (2, sum(s * s + 2 for s in scales), 12)


@pytest.mark.parametrize("bad,msg", [([], "is empty"), ([4, 0], "non-positive"), ([4, -2], "non-positive"), ([4, 4], "repeats"), ("abc", "list of positive ints")])
def test_bad_scales_name_the_key(bad, msg):
    with pytest.raises(ConfigError, match=msg) as e:
        validate_scales(bad)
    assert "model.queries.scales" in str(e.value)


def test_grid_encoding_matches_across_scales_at_same_location():
    # the centre cell of a 3×3 grid and the single cell of a 1×1 grid cover the same centre
    p1, p3 = sincos_grid_encoding(1, 64), sincos_grid_encoding(3, 64)
    assert torch.allclose(p1[0], p3[4], atol=1e-6)
    assert torch.allclose(p3.norm(dim=1), torch.ones(9))
    assert not torch.allclose(p3[0], p3[8])


def test_queries_init_is_l2_normalised_times_norm():
    q = MultiScaleQueries(64, [4], init_norm=0.5)
    assert torch.allclose(q.queries[0].norm(dim=1), torch.full((16,), 0.5), atol=1e-5)


def test_a_named_layout_and_the_embedding_norm_are_resolved_by_the_block():
    """build_model hands over the DiT's grid and the MLLM's embedding norm; the block reads its own options."""
    q = MultiScaleQueries(16, "pyramid", grid=16, init_norm="embedding", embedding_norm=0.25, grid_encoding=NoGridEncoding())
    assert q.scales == (4, 8, 16) and torch.allclose(q.queries[0].norm(dim=1), torch.full((16,), 0.25), atol=1e-5)
    assert MultiScaleQueries(16, "finest", grid=2).scales == (2,)
