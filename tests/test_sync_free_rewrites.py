"""The sync-free rewrites of issue 5 keep the methods' picks: each is checked against the form it replaced (the
data-dependent or step-loop version, kept here as the oracle) on random inputs, with many exact ties where the
rewrite is exact arithmetic (cuts, reconcile)."""

from __future__ import annotations

import math
from unittest import mock

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sync_free import SyncGuard

from vidcompress import VideoTokens, get_compressor, target_count
from vidcompress.methods.fastvid import FastVID, anchor_context_counts
from vidcompress.methods.holitom import static_windows
from vidcompress.methods.prunevid import contiguous_segments
from vidcompress.methods.uniform import frame_budgets
from vidcompress.methods.vidcom2 import VidCom2
from vidcompress.kernels.segment_mean import segment_mean_reference
from vidcompress.ops.budgets import first_set, picks_to_flat, proportional_budgets
from vidcompress.ops.dpc_knn import rank_desc
from vidcompress.ops.greedy import farthest_point_select, mmr_select
from vidcompress.ops.reconcile import group_by_representative, group_priority, reconcile, release_candidates
from vidcompress.ops.similarity import minmax
from vidcompress.ops.sorting import sort_ints, stable_order
from vidcompress.ops.temporal import (
    cuts_with_minimum,
    frame_segment_totals,
    segment_bounds,
    segment_first_frames,
    segment_ids,
)

FAST = settings(max_examples=25, deadline=None)



def _cuts_oracle(similarity: torch.Tensor, threshold: float, min_segments: int) -> torch.Tensor:
    cuts = similarity < threshold
    missing = min(min_segments - 1, similarity.shape[0]) - int(cuts.sum())
    if missing > 0:
        order = stable_order(similarity.masked_fill(cuts, float("inf")))
        cuts = cuts.clone()
        cuts[order[:missing]] = True
    return cuts


def _reconcile_oracle(keep: torch.Tensor, score: torch.Tensor, count: int) -> torch.Tensor:
    surplus = int(keep.sum()) - count
    if surplus > 0:
        rank = rank_desc(torch.where(keep, score, torch.full_like(score, float("-inf")))[None])[0]
        return keep & (rank >= surplus)
    if surplus < 0:
        rank = rank_desc(torch.where(keep, torch.full_like(score, float("-inf")), -score)[None])[0]
        return keep | (rank < -surplus)
    return keep


@given(length=st.integers(0, 12), levels=st.integers(1, 5), threshold=st.integers(0, 5), minimum=st.integers(0, 14),
       seed=st.integers(0, 10_000))
@FAST
def test_cuts_with_minimum_matches_the_counting_form(length: int, levels: int, threshold: int, minimum: int,
                                                     seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    similarity = torch.randint(0, levels, (length,), generator=generator).float() / levels  # many ties
    expected = _cuts_oracle(similarity, threshold / levels, minimum)
    assert torch.equal(cuts_with_minimum(similarity, threshold / levels, minimum), expected)


@given(size=st.integers(1, 40), count_share=st.floats(0.0, 1.0), seed=st.integers(0, 10_000))
@FAST
def test_vidcom2_reconcile_matches_the_counting_form(size: int, count_share: float, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    score = torch.randint(0, 4, (size,), generator=generator).float()  # many ties
    keep = torch.rand(size, generator=generator) < 0.5
    count = round(count_share * size)
    expected = torch.nonzero(_reconcile_oracle(keep, score, count)).squeeze(1)
    assert torch.equal(torch.sort(VidCom2._reconcile(keep, score, count)).values, expected)


def _tokens(seed: int, grid: tuple[int, int, int]) -> VideoTokens:
    generator = torch.Generator().manual_seed(seed)
    t, h, w = grid
    features = torch.randn(t, h * w, 8, generator=generator)
    attention = torch.rand(t, h * w, generator=generator)
    return VideoTokens(features=features, grid=grid, attention=attention)


@given(seed=st.integers(0, 10_000), frames=st.integers(1, 4), retention=st.floats(0.05, 0.9))
@FAST
def test_divprune_and_mmr_pick_what_the_step_loops_picked(seed: int, frames: int, retention: float) -> None:
    """Continuous features: exact cosine ties (duplicated tokens) may resolve differently, because the matrix
    form rounds differently from the running-vector form (``kernels/greedy.py`` lists these rounding-level
    differences)."""
    tokens = _tokens(seed, (frames, 3, 4))
    t, h, w = tokens.grid
    count = target_count(tokens.grid, retention)
    pool = tokens.features.reshape(1, t * h * w, -1)
    budgets = frame_budgets(t, count)
    importance = tokens.attention
    cases = {
        ("divprune", "global"): farthest_point_select(pool, count)[0],
        ("divprune", "per_frame"): picks_to_flat(farthest_point_select(tokens.features, max(budgets)), budgets, h * w),
        ("mmr", "global"): mmr_select(pool, minmax(importance.reshape(1, -1)), count)[0],
        ("mmr", "per_frame"): picks_to_flat(mmr_select(tokens.features, minmax(importance), max(budgets)), budgets,
                                            h * w),
    }
    for (name, pool_kind), picks in cases.items():
        out = get_compressor(name, retention=retention, pool=pool_kind)(tokens)
        assert torch.equal(out.representatives, torch.sort(picks).values), (name, pool_kind)


def _budgets_oracle(weights: list[float], total: int, floor: int, cap: int) -> list[int]:
    """The host water filling that ``proportional_budgets`` replaced: cap the full rows, spread again, repeat."""
    rows = len(weights)
    budgets = [float(floor)] * rows
    open_rows = set(range(rows))
    remaining = float(total - floor * rows)
    while remaining > 1e-9 and open_rows:
        mass = sum(weights[r] for r in open_rows)
        share = {r: (weights[r] / mass if mass > 0 else 1.0 / len(open_rows)) for r in open_rows}
        full = [r for r in open_rows if budgets[r] + remaining * share[r] >= cap]
        if not full:
            for r in open_rows:
                budgets[r] += remaining * share[r]
            break
        for r in full:
            remaining -= cap - budgets[r]
            budgets[r] = float(cap)
            open_rows.discard(r)
    whole = [min(cap, math.floor(b + 1e-9)) for b in budgets]
    short = total - sum(whole)
    for r in sorted(range(rows), key=lambda r: (-(budgets[r] - whole[r]), r)):
        if short == 0:
            break
        if whole[r] < cap:
            whole[r] += 1
            short -= 1
    return whole


@given(rows=st.integers(1, 12), levels=st.integers(1, 6), cap=st.integers(1, 20), floor_share=st.floats(0.0, 1.0),
       total_share=st.floats(0.0, 1.0), seed=st.integers(0, 10_000))
@settings(max_examples=200, deadline=None)
def test_proportional_budgets_match_the_host_water_filling(rows: int, levels: int, cap: int, floor_share: float,
                                                           total_share: float, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    weights = torch.randint(0, levels + 1, (rows,), generator=generator).double() ** 2  # ties, zeros, capped rows
    floor = round(floor_share * cap)
    total = floor * rows + round(total_share * (cap - floor) * rows)
    expected = _budgets_oracle(weights.tolist(), total, floor, cap)
    assert proportional_budgets(weights, total, floor, cap).tolist() == expected


def _static_windows_oracle(similarity: torch.Tensor, tau: float, max_window: int) -> tuple[list[tuple[int, int]], int]:
    """HoliTom's dynamic programme as the reference writes it: a gain table and a loop over window ends."""
    frames = similarity.shape[0] + 1
    above = similarity > tau
    gain = [[0] * frames for _ in range(frames)]
    for start in range(frames - 1):
        counts = torch.cumprod(above[start:].long(), dim=0).sum(1).tolist()
        for offset, static in enumerate(counts):
            gain[start][start + 1 + offset] = static * (offset + 1)
    best, first = [0] * frames, [0] * frames
    for end in range(frames):
        value, start = (best[end - 1] if end > 0 else 0), end
        for width in range(2, min(end + 1, max_window) + 1):
            before = end - width
            candidate = (best[before] if before >= 0 else 0) + gain[before + 1][end]
            if candidate > value:
                value, start = candidate, before + 1
        best[end], first[end] = value, start
    windows, end = [], frames - 1
    while end >= 0:
        windows.append((first[end], end + 1))
        end = first[end] - 1
    return windows[::-1], best[-1]


@given(frames=st.integers(1, 14), positions=st.integers(1, 5), levels=st.integers(1, 4),
       max_window=st.integers(2, 16), seed=st.integers(0, 10_000))
@settings(max_examples=150, deadline=None)
def test_holitom_windows_match_the_dynamic_programme_loop(frames: int, positions: int, levels: int, max_window: int,
                                                          seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    similarity = torch.randint(0, levels + 1, (frames - 1, positions), generator=generator).float() / levels
    windows, removed = _static_windows_oracle(similarity, 0.5, max_window)  # many ties between window choices
    window_of, gain = static_windows(similarity, 0.5, max_window)
    assert segment_bounds(window_of) == windows and int(gain) == removed


def _contiguous_segments_oracle(labels: list[int]) -> list[tuple[int, int]]:
    """PruneVid's run refinement as a host loop over runs (the form ``contiguous_segments`` replaced)."""
    runs: list[list[int]] = []  # [label, length]
    for label in labels:
        if runs and runs[-1][0] == label:
            runs[-1][1] += 1
        else:
            runs.append([label, 1])
    while len(runs) > 1:
        longest: dict[int, int] = {}
        for index, (label, length) in enumerate(runs):
            if label not in longest or length > runs[longest[label]][1]:
                longest[label] = index
        orphans = [i for i, (label, length) in enumerate(runs) if longest[label] != i or length == 1]
        if not orphans:
            break
        i = orphans[0]
        left = runs[i - 1] if i > 0 else None
        right = runs[i + 1] if i + 1 < len(runs) else None
        neighbour = left if right is None or (left is not None and left[1] >= right[1]) else right
        runs[i][0] = neighbour[0]
        merged: list[list[int]] = []
        for label, length in runs:
            if merged and merged[-1][0] == label:
                merged[-1][1] += length
            else:
                merged.append([label, length])
        runs = merged
    bounds, start = [], 0
    for _, length in runs:
        bounds.append((start, start + length))
        start += length
    return bounds


@given(labels=st.lists(st.integers(0, 4), min_size=1, max_size=24))
@settings(max_examples=300, deadline=None)
def test_prunevid_segments_match_the_run_loop(labels: list[int]) -> None:
    assert segment_bounds(contiguous_segments(torch.tensor(labels))) == _contiguous_segments_oracle(labels)


@given(tokens=st.integers(1, 30), groups=st.integers(1, 10), slack=st.integers(0, 6), count_share=st.floats(0.0, 1.0),
       seed=st.integers(0, 10_000))
@FAST
def test_reconcile_of_a_padded_grouping_equals_the_exact_one(tokens: int, groups: int, slack: int, count_share: float,
                                                             seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    rep_pool = torch.randperm(tokens, generator=generator)[: min(groups, tokens)]
    rep_of = rep_pool[torch.randint(0, rep_pool.shape[0], (tokens,), generator=generator)]
    rep_of[torch.rand(tokens, generator=generator) < 0.2] = -1
    rep_of[rep_pool] = rep_pool  # a representative is its own member
    features = torch.randn(tokens, 4, generator=generator)
    score = torch.randint(0, 3, (tokens,), generator=generator).float()
    count = max(1, round(count_share * tokens))
    exact = group_by_representative(rep_of)
    padded = group_by_representative(rep_of, max_groups=exact.num_groups + slack)
    with SyncGuard():
        out = reconcile(padded, features, 3, count, group_priority(padded, score), release_candidates(padded, score))
    expected = reconcile(exact, features, 3, count, group_priority(exact, score), release_candidates(exact, score))
    assert torch.equal(out.group, expected.group) and torch.equal(out.representative, expected.representative)
    # with candidates, members may leave their groups: no rows; without, the rows are the final groups' means
    assert out.features is None and (expected.features is None)
    if count <= exact.num_groups:
        none = padded.group.new_empty(0)
        out = reconcile(padded, features, 3, count, group_priority(padded, score), none)
        assert torch.equal(out.group, expected.group) and torch.equal(out.representative, expected.representative)
        means = segment_mean_reference(features, out.group, count, out.weights)
        assert torch.allclose(out.features, means, atol=1e-5)


@given(rows=st.integers(1, 3), n=st.integers(0, 40), extra=st.integers(0, 5), share=st.floats(0, 1),
       seed=st.integers(0, 10_000))
@FAST
def test_first_set_is_a_padded_nonzero(rows: int, n: int, extra: int, share: float, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(rows, n, generator=generator) < share
    count = round(share * n) + extra - 2 if round(share * n) + extra >= 2 else 0
    got = first_set(mask, count)
    assert got.shape == (rows, count) and torch.equal(first_set(mask[0], count), got[0])
    for row, picks in zip(mask, got):
        expected = torch.nonzero(row).squeeze(1)[:count]
        assert torch.equal(picks[: expected.shape[0]], expected)
        assert (picks[expected.shape[0]:] == n).all()


@given(rows=st.integers(1, 3), n=st.integers(1, 50), levels=st.integers(1, 4), seed=st.integers(0, 10_000))
@FAST
def test_rank_desc_by_counting_equals_the_stable_sort(rows: int, n: int, levels: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    score = torch.randint(0, levels, (rows, n), generator=generator).float()  # many ties
    score[torch.rand(rows, n, generator=generator) < 0.2] = float("-inf")
    order = torch.sort(score, dim=-1, descending=True, stable=True).indices
    expected = torch.empty_like(order).scatter_(-1, order, torch.arange(n).expand(rows, n).contiguous())
    assert torch.equal(rank_desc(score), expected)


# -- FastVID / FlashVID: per-segment and per-frame loops replaced by batched, padded forms --------------------------
def _random_ids(generator: torch.Generator, frames: int) -> torch.Tensor:
    return segment_ids(torch.rand(max(frames - 1, 0), generator=generator) < 0.4)


def _anchor_counts_oracle(ids: torch.Tensor, per_frame: int, interval: int) -> list[int]:
    counts = []
    for start, stop in segment_bounds(ids):
        length = stop - start
        share = per_frame * length // math.ceil(length / interval)
        counts += [share if (length - 1 - i) % interval == 0 else 0 for i in range(length)]
    return counts


@given(frames=st.integers(1, 20), per_frame=st.integers(0, 9), interval=st.integers(1, 6), seed=st.integers(0, 10_000))
@FAST
def test_fastvid_anchor_counts_match_the_segment_loop(frames: int, per_frame: int, interval: int, seed: int) -> None:
    ids = _random_ids(torch.Generator().manual_seed(seed), frames)
    expected = _anchor_counts_oracle(ids, per_frame, interval)
    assert anchor_context_counts(ids, per_frame, interval).tolist() == expected


def _anchor_choices_oracle(affinity: torch.Tensor, frame_of: torch.Tensor) -> torch.Tensor:
    chosen = torch.zeros_like(affinity, dtype=torch.bool)
    for frame in torch.unique(frame_of).tolist():
        columns = torch.nonzero(frame_of == frame).squeeze(1)
        block = affinity[:, columns]
        pick = block.argmax(1)
        rows = torch.nonzero(block.amax(1) > float("-inf")).squeeze(1)
        chosen[rows, columns[pick[rows]]] = True
    return chosen


@given(rows=st.integers(1, 12), frames=st.integers(1, 5), columns=st.integers(1, 12), seed=st.integers(0, 10_000))
@FAST
def test_fastvid_anchor_choices_take_the_first_maximum_of_each_frame(rows: int, frames: int, columns: int,
                                                                      seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    frame_of = torch.sort(torch.randint(0, frames + 1, (columns,), generator=generator)).values  # frames: padding
    affinity = torch.randint(0, 3, (rows, columns), generator=generator).float()  # many ties
    affinity = affinity.masked_fill(torch.rand(rows, columns, generator=generator) < 0.3, float("-inf"))
    affinity = affinity.masked_fill(torch.rand(rows, columns, generator=generator) < 0.1, float("inf"))
    assert torch.equal(FastVID._anchor_choices(affinity, frame_of, frames), _anchor_choices_oracle(affinity, frame_of))


def _children_oracle(best: torch.Tensor, ids: torch.Tensor, budget: int, threshold: float) -> torch.Tensor:
    n = best.shape[1]
    child = torch.zeros_like(best, dtype=torch.bool)
    for start, stop in segment_bounds(ids):
        part = best[start:stop]
        most = (stop - start) * (n - budget)
        above = part > threshold
        if int(above.sum()) > most:
            if most <= 0:
                above = torch.zeros_like(above)
            else:
                soft = float(torch.topk(part.reshape(-1), most).values[-1])
                above = part > max(soft, -1.0 + 1e-6)
        child[start:stop] = above
    return child


@given(frames=st.integers(1, 10), n=st.integers(1, 9), budget=st.integers(1, 9), threshold=st.sampled_from([-0.5, 0.0, 0.5]),
       seed=st.integers(0, 10_000))
@FAST
def test_flashvid_children_match_the_per_segment_guard(frames: int, n: int, budget: int, threshold: float,
                                                       seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    ids = _random_ids(generator, frames)
    best = torch.randint(-2, 3, (frames, n), generator=generator).float() / 2  # ties, and -1 (no parent)
    compressor = get_compressor("flashvid", temporal_threshold=threshold)
    expected = _children_oracle(best, ids, min(budget, n), threshold)
    assert torch.equal(compressor._children(best, ids, min(budget, n)), expected)


@given(shape=st.sampled_from([(1,), (7,), (40,), (3, 25)]), levels=st.integers(1, 5), seed=st.integers(0, 10_000))
@FAST
def test_counting_sorts_under_compile_equal_the_stable_sort(shape: tuple[int, ...], levels: int, seed: int) -> None:
    """``stable_order`` / ``sort_ints`` take the counting form while Dynamo traces (forced here): same order as
    ``torch.sort(stable=True)``, ties included, along either axis."""
    generator = torch.Generator().manual_seed(seed)
    keys = torch.randint(-1, levels, shape, generator=generator)
    floats = keys.float().masked_fill(keys == -1, float("inf"))
    want = torch.sort(floats, stable=True).indices
    with mock.patch.object(torch.compiler, "is_compiling", lambda: True):
        assert torch.equal(stable_order(floats), want)
        got = sort_ints(keys, levels, dim=0, stable=True)
    expected = torch.sort(keys, dim=0, stable=True)
    assert torch.equal(got.indices, expected.indices) and torch.equal(got.values, expected.values)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=12), st.integers(0, 2**31 - 1))
def test_frame_segment_totals_match_the_per_segment_loop(lengths: list[int], seed: int) -> None:
    """Per-frame segment totals and first frames by the same-segment mask equal a loop over the segments."""
    ids = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    values = torch.randint(-50, 50, (ids.shape[0],), generator=torch.Generator().manual_seed(seed))
    start = 0
    for length in lengths:
        frames = slice(start, start + length)
        assert torch.equal(frame_segment_totals(values, ids)[frames], values[frames].sum().expand(length))
        assert torch.equal(frame_segment_totals(None, ids)[frames], torch.full((length,), length))
        assert torch.equal(segment_first_frames(ids)[frames], torch.full((length,), start))
        start += length
    assert frame_segment_totals(values, ids).dtype == torch.long
