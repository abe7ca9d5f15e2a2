"""The project's own Qwen2.5-VL M-RoPE against transformers' get_rope_index.

Where transformers follows the reference semantics (video positions, text before the video) they must agree. Where it
does not — transformers 5.3+ continues the text after a video at ``start + max(H', W')`` instead of
``max(t, h, w) + 1`` — ``rope_compat="hf"`` must agree with it and the default must keep the reference rule.
"""

from __future__ import annotations

import pytest
import torch
import transformers
from packaging.version import Version

from vidcompress.positions import mrope_positions, video_positions

VIDEO = 7  # <|video_pad|> in the tiny tokenizer


def prompt(prefix: int, grid: tuple[int, int, int], suffix: int) -> torch.Tensor:
    count = grid[0] * grid[1] * grid[2]
    return torch.tensor([10] * prefix + [VIDEO] * count + [11] * suffix)


def test_hand_example_reference_semantics():
    # 3 text tokens, a 2x2x2 grid with interval 2, 2 text tokens
    ids = prompt(3, (2, 2, 2), 2)
    positions, next_position = mrope_positions(ids, VIDEO, [(2, 2, 2)], [2.0])
    assert positions[:, :3].tolist() == [[0, 1, 2]] * 3
    # temporal ids 3 and 5, rows and columns 3..4
    assert positions[0, 3:11].tolist() == [3, 3, 3, 3, 5, 5, 5, 5]
    assert positions[1, 3:11].tolist() == [3, 3, 4, 4, 3, 3, 4, 4]
    assert positions[2, 3:11].tolist() == [3, 4, 3, 4, 3, 4, 3, 4]
    assert positions[:, 11:].tolist() == [[6, 7]] * 3  # max(5, 4, 4) + 1
    assert next_position == 8
    hf, hf_next = mrope_positions(ids, VIDEO, [(2, 2, 2)], [2.0], rope_compat="hf")
    assert hf[:, 11:].tolist() == [[5, 6]] * 3  # 3 + max(2, 2): overlaps the last temporal id
    assert hf_next == 7


def test_fractional_interval_floors_after_the_multiply():
    assert video_positions((4, 1, 1), 0, 0.5)[0].tolist() == [0, 0, 1, 1]
    assert video_positions((3, 1, 1), 10, 2 / 3)[0].tolist() == [10, 10, 11]


def test_errors_name_the_problem():
    ids = prompt(1, (2, 2, 2), 1)
    with pytest.raises(ValueError, match="placeholders"):
        mrope_positions(ids, VIDEO, [(2, 2, 3)], [1.0])
    with pytest.raises(ValueError, match="more video"):
        mrope_positions(ids, VIDEO, [], [])
    with pytest.raises(ValueError, match="rope_compat"):
        mrope_positions(ids, VIDEO, [(2, 2, 2)], [1.0], rope_compat="vllm")


@pytest.mark.parametrize("second_per_grid", [1.0, 0.5, 0.25, 1 / 3, 2.0])
@pytest.mark.parametrize("grid", [(4, 4, 4), (3, 2, 5)])
def test_agrees_with_transformers_get_rope_index(qwen, grid, second_per_grid):
    model, _ = qwen
    merge = model.config.vision_config.spatial_merge_size
    ids = prompt(5, grid, 4)
    token_types = (ids == VIDEO).int() * 2
    patch_grid = torch.tensor([[grid[0], grid[1] * merge, grid[2] * merge]])
    hf_positions, hf_deltas = model.model.get_rope_index(
        input_ids=ids[None],
        mm_token_type_ids=token_types[None],
        video_grid_thw=patch_grid,
        second_per_grid_ts=torch.tensor([second_per_grid]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
    )
    interval = model.config.vision_config.tokens_per_second * second_per_grid
    ours_hf, _ = mrope_positions(ids, VIDEO, [grid], [interval], rope_compat="hf")
    if Version(transformers.__version__) < Version("5.18") and second_per_grid != int(second_per_grid):
        # transformers 5.4 - 5.17 truncate second_per_grid_ts to an int (fixed in 5.18, PR #48669): every temporal
        # group of a video sampled above 2 fps gets the same temporal id. We do not follow that bug; height, width
        # and text rows still agree.
        video = ids == VIDEO
        assert len(set(hf_positions[0, 0, video].tolist())) == 1
        assert torch.equal(ours_hf[1:], hf_positions[1:, 0])
        return
    assert torch.equal(ours_hf, hf_positions[:, 0])

    reference, next_position = mrope_positions(ids, VIDEO, [grid], [interval])
    # reference rope_deltas = max + 1 - L, the quantity transformers stores for decoding without position_ids
    assert next_position - len(ids) == int(reference.max()) + 1 - len(ids)
    if int(reference.max()) == int(hf_positions.max()):  # video temporal ids reach past the text: deltas agree
        assert next_position - len(ids) == int(hf_deltas[0])
    video = ids == VIDEO
    after = torch.arange(len(ids)) >= int(video.nonzero()[-1]) + 1
    # video and the text before it: same in both; text after: reference continues at max + 1
    assert torch.equal(reference[:, ~after], hf_positions[:, 0][:, ~after])
    assert int(reference[0, after][0]) == int(reference[:, video].max()) + 1
