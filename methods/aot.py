"""``aot``: attention anchors + optimal-transport aggregation, within frames then across the frames of a clip."""

from __future__ import annotations

import itertools
import math

import torch

from vidcompress.assemble import merge_tokens
from vidcompress.compressor import Compressor
from vidcompress.kernels import matmul_float32, pairwise
from vidcompress.ops.budgets import first_set, int_tensor_on
from vidcompress.ops.reconcile import Grouping, reconcile, release_candidates
from vidcompress.ops.sinkhorn import gibbs_kernel, sinkhorn
from vidcompress.registry import register_compressor
from vidcompress.tokens import CompressedTokens, Grid, VideoTokens

OT_MASS = ("reference", "per_anchor")


def clip_starts(num_frames: int, clip_length: int | None) -> tuple[list[int], list[int]]:
    """``(starts, lengths)`` of the fixed clips, on the host; ``None`` picks ``max(2, round(T / 8))`` frames per
    clip."""
    length = max(2, round(num_frames / 8)) if clip_length is None else clip_length
    starts = list(range(0, num_frames, length))
    return starts, [min(length, num_frames - start) for start in starts]


def predicted_counts(
    tokens_per_frame: int, clip_lengths: list[int], keep_ratio: float, inter_compress: bool
) -> torch.Tensor:
    """Native output count for every anchor budget ``M = 1 .. N`` (index ``M - 1``).

    A clip of ``L`` frames yields its ``M`` keyframe anchors plus, per later frame, the sources whose largest
    transport probability lies below the ``keep_ratio`` quantile: ``ceil(keep_ratio · (M − 1))`` of ``M`` when the
    probabilities are distinct, at most that with ties: an upper bound of the native count. Computed on the host
    (CPU tensors).
    """
    anchors = torch.arange(1, tokens_per_frame + 1, dtype=torch.float64)
    num_frames = sum(clip_lengths)
    if not inter_compress:
        return anchors * num_frames
    residuals = torch.ceil(keep_ratio * (anchors - 1))
    return anchors * len(clip_lengths) + residuals * (num_frames - len(clip_lengths))


def window_ids(height: int, width: int, windows: int, device: torch.device) -> torch.Tensor:
    """``[H*W]`` window of each raster cell when the frame is cut into ``windows x windows`` near-equal blocks."""
    rows = torch.arange(height, device=device) * windows // height
    cols = torch.arange(width, device=device) * windows // width
    return (rows[:, None] * windows + cols[None, :]).reshape(-1)


def window_sizes(height: int, width: int, windows: int) -> list[int]:
    """Number of raster cells in each of the ``windows x windows`` blocks of :func:`window_ids`, on the host."""
    rows = [sum(1 for i in range(height) if i * windows // height == r) for r in range(windows)]
    cols = [sum(1 for j in range(width) if j * windows // width == c) for c in range(windows)]
    return [r * c for r in rows for c in cols]


def select_anchors(
    attention: torch.Tensor, grid: Grid, num_anchors: int, global_ratio: float, windows: int
) -> torch.Tensor:
    """``[T, M]`` raster indices (ascending) of each frame's anchors.

    Local anchors: ``int(M · (1 − global_ratio)) // windows²`` top-attention tokens of every window (fewer where a
    window is smaller); global anchors: the top-attention tokens among the rest, up to ``M`` in all.
    """
    frames, n = attention.shape
    device = attention.device
    window = window_ids(grid[1], grid[2], windows, device)
    per_window = int(num_anchors * (1 - global_ratio)) // (windows * windows)
    by_attention = torch.sort(-attention, dim=1, stable=True).indices
    by_window = torch.sort(window[by_attention], dim=1, stable=True).indices
    ordered = by_attention.gather(1, by_window)  # (window, attention desc, index)
    sizes = window_sizes(grid[1], grid[2], windows)
    window_start = int_tensor_on(tuple(itertools.accumulate(sizes, initial=0))[:-1], device)
    rank = torch.arange(n, device=device) - window_start[window[ordered]]
    is_local = torch.zeros(frames, n, dtype=torch.bool, device=device)
    is_local.scatter_(1, ordered, rank < per_window)
    num_global = num_anchors - sum(min(size, per_window) for size in sizes)
    rest = attention.masked_fill(is_local, float("-inf"))
    global_order = torch.sort(rest, dim=1, descending=True, stable=True).indices[:, :num_global]
    return first_set(is_local.scatter(1, global_order, True), num_anchors)


def normalised_coordinates(grid: Grid, device: torch.device) -> torch.Tensor:
    """``[H*W, 2]`` ``(x, y)`` of each cell, each axis spread over ``[0, 1]``."""
    ys, xs = torch.meshgrid(
        torch.linspace(0, 1, grid[1], device=device), torch.linspace(0, 1, grid[2], device=device), indexing="ij"
    )
    return torch.stack([xs, ys], dim=-1).reshape(-1, 2)


def gather_rows(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values[t, index[t]]`` for ``values`` ``[T, N, D]`` and ``index`` ``[T, K]``: one row gather over the
    flattened tokens (whole rows copied with vector loads, unlike ``gather`` with an expanded index)."""
    frames, n, dim = values.shape
    flat_index = index + torch.arange(frames, device=index.device)[:, None] * n
    return values.reshape(frames * n, dim)[flat_index.reshape(-1)].reshape(*index.shape, dim)


@register_compressor(
    "aot",
    needs_attention=True,
    paper="AOT: token anchors and optimal-transport aggregation for video LLMs (CVPR 2026, arXiv 2603.01400)",
    reference="TyroneLi/AOT",
)
class AOT(Compressor):
    """Per-frame attention anchors absorb the other tokens by optimal transport; clip keyframes absorb later frames.

    Paper: AOT, CVPR 2026, arXiv 2603.01400; reference ``TyroneLi/AOT`` (``llava_arch.py``,
    ``encode_images_siglip_OTA``).

    Phase I, per frame: ``M`` anchors — local ones, the top attention of each of ``window_grid²`` windows
    (``int(M·(1−global_ratio)) // window_grid²`` each), and global ones, the top attention of the rest. Every other
    token is transported to the anchors by Sinkhorn (cost ``1 − cos + spatial_weight·‖Δxy‖`` on ``[0, 1]``-normalised
    grid coordinates, ``epsilon``, uniform marginals, at most ``max_iter`` updates, stop when the scalings move less
    than ``tol``), and each anchor becomes ``(1−hard_mix)·(a + s·Σ T x)/(1 + s·Σ T) + hard_mix·(s·a + Σ_nearest x)/
    (s + count)`` with ``s = intra_scale`` and "nearest" by cosine. Phase II (``inter_compress``), per clip of
    ``clip_length`` frames: the keyframe's anchors are transported onto by each later frame's anchors in turn (cost
    ``(1 − cos − min) · (1 − exp(−i²/2σ_t²))``), the plan is row-normalised, sources whose largest probability is
    below the ``keep_ratio`` quantile stay as tokens, the others are absorbed softly (``inter_scale``).

    Differences from the reference:

    * the reference as released does not run (a missing colon at the newline test) and emits the keyframe twice
      (its raw anchors and its updated anchors); here the algorithm is reproduced, the keyframe once, as its updated
      anchors at the keyframe anchors' positions (the ``source`` contract has one output row per input token);
    * one attention map: the contract carries the last ViT layer's attention, used for both the local (reference:
      SigLIP layer 5) and the global (layer −2) anchors;
    * no pre-pool pass: the method runs on the grid it is given (LLaVA-OV's pooled 14x14, Qwen2.5-VL's merged
      tokens per temporal group); anchors are kept as tokens, where the reference pools the anchor-updated 27x27 map
      bilinearly and keeps pooled cells whose anchor mask pools to ≥ 0.5;
    * a window remainder (local budget not divisible by the windows, windows smaller than their share) goes to the
      global anchors, so every frame has exactly ``M`` anchors (the reference loses the remainder);
    * clips: 4 frames for 32, 8 for 64 as in the reference; other frame counts (the reference raises) use
      ``max(2, round(T/8))``; a short last clip is allowed;
    * bookkeeping for ``source``: a token goes to the anchor that receives most of its transport mass;
    * output in temporal-then-raster order of the representatives (the reference: anchors, residuals, anchors).

    Counting: the paper's ``VISUAL_TOKEN_NUM`` (anchors per frame, of 729 pre-pool) is ``visual_token_num`` here
    (anchors per frame of the given grid); ``None`` derives it from the target as the smallest budget whose
    predicted native count reaches ``target_count``. The native count is data-dependent (the quantile keep); with
    ``exact=True`` it is reconciled (``methods.md`` §0.7): lowest-attention outputs are folded into their most
    similar output of the same frame, or highest-attention absorbed tokens come back as singletons.
    ``ot_mass="per_anchor"`` scales the intra-frame plan by ``M`` so each anchor's incoming mass is ≈ 1 (in the
    reference the plan has total mass 1 and barely moves the anchors; our proposal, not the paper's).
    """

    def __init__(
        self,
        retention: float = 1.0,
        *,
        exact: bool = True,
        visual_token_num: int | None = None,
        global_ratio: float = 0.5,
        keep_ratio: float = 0.3,
        inter_compress: bool = True,
        clip_length: int | None = None,
        window_grid: int = 3,
        epsilon: float = 0.1,
        max_iter: int = 100,
        tol: float = 1e-2,
        spatial_weight: float = 0.5,
        hard_mix: float = 0.1,
        intra_scale: float = 1.0,
        inter_scale: float = 1.0,
        sigma_t: float = 1.5,
        ot_mass: str = "reference",
    ) -> None:
        super().__init__(retention, exact=exact)
        for name, value in (("global_ratio", global_ratio), ("keep_ratio", keep_ratio), ("hard_mix", hard_mix)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
        for name, value in (("visual_token_num", visual_token_num), ("clip_length", clip_length)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be None or a positive integer, got {value!r}")
        for name, value in (("window_grid", window_grid), ("max_iter", max_iter)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name, value in (("epsilon", epsilon), ("sigma_t", sigma_t)):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        for name, value in (("tol", tol), ("spatial_weight", spatial_weight), ("intra_scale", intra_scale),
                            ("inter_scale", inter_scale)):
            if not value >= 0:
                raise ValueError(f"{name} must be non-negative, got {value!r}")
        if ot_mass not in OT_MASS:
            raise ValueError(f"ot_mass must be one of {OT_MASS}, got {ot_mass!r}")
        self.visual_token_num = visual_token_num
        self.global_ratio = float(global_ratio)
        self.keep_ratio = float(keep_ratio)
        self.inter_compress = bool(inter_compress)
        self.clip_length = clip_length
        self.window_grid = window_grid
        self.epsilon = float(epsilon)
        self.max_iter = max_iter
        self.tol = float(tol)
        self.spatial_weight = float(spatial_weight)
        self.hard_mix = float(hard_mix)
        self.intra_scale = float(intra_scale)
        self.inter_scale = float(inter_scale)
        self.sigma_t = float(sigma_t)
        self.ot_mass = ot_mass

    def compress(self, tokens: VideoTokens, count: int) -> CompressedTokens:
        frames, height, width = tokens.grid
        n = height * width
        starts, lengths = clip_starts(frames, self.clip_length)
        num_anchors = self.anchor_budget(count, n, lengths)
        assert tokens.attention is not None  # checked by Compressor.__call__
        attention = tokens.attention.float()
        anchor_index = select_anchors(attention, tokens.grid, num_anchors, self.global_ratio, self.window_grid)
        anchors, slot = self.intra_frame(tokens.features, anchor_index, tokens.grid)
        owner = torch.arange(frames * num_anchors, device=anchors.device).view(frames, num_anchors)
        if self.inter_compress:
            anchors, owner = self.inter_frame(anchors, owner, starts, lengths)
        bound = int(predicted_counts(n, lengths, self.keep_ratio, self.inter_compress).tolist()[num_anchors - 1])
        grouping = self.grouping(anchor_index, anchors, owner, slot, bound)
        if self.exact:
            score = attention.reshape(-1)
            priority = torch.cat([score, score.new_zeros(1)])[grouping.representative]  # padded slots: unused
            candidates = release_candidates(grouping, score)
            grouping = reconcile(grouping, tokens.flat_features, n, count, priority, candidates)
        else:
            grouping = grouping.trimmed()  # the native count is data-dependent: read back
        return merge_tokens(tokens, grouping.group, grouping.representative, rows=grouping.features)

    def anchor_budget(self, count: int, tokens_per_frame: int, clip_lengths: list[int]) -> int:
        """Anchors per frame: ``visual_token_num``, or the smallest budget whose predicted count reaches ``count``."""
        if self.visual_token_num is not None:
            if self.visual_token_num > tokens_per_frame:
                raise ValueError(
                    f"visual_token_num={self.visual_token_num} exceeds the {tokens_per_frame} tokens of a frame"
                )
            return self.visual_token_num
        predicted = predicted_counts(tokens_per_frame, clip_lengths, self.keep_ratio, self.inter_compress).tolist()
        return next((m + 1 for m, value in enumerate(predicted) if value >= count), tokens_per_frame)

    def intra_frame(
        self, features: torch.Tensor, anchor_index: torch.Tensor, grid: Grid
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Phase I: ``([T, M, D] float32 updated anchors, [T, N] anchor slot each token went to)``; ``features`` are
        read in their own dtype (only the gathered rows are converted to float32)."""
        frames, n, _ = features.shape
        num_anchors = anchor_index.shape[1]
        device = features.device
        is_anchor = torch.zeros(frames, n, dtype=torch.bool, device=device).scatter(1, anchor_index, True)
        slot = torch.zeros(frames, n, dtype=torch.long, device=device)
        slot.scatter_(1, anchor_index, torch.arange(num_anchors, device=device).expand(frames, num_anchors))
        anchor_rows = gather_rows(features, anchor_index)
        anchors = anchor_rows.float()
        if num_anchors == n:
            return anchors, slot
        other_index = first_set(~is_anchor, n - num_anchors)
        other_rows = gather_rows(features, other_index)
        cosine = pairwise(other_rows, anchor_rows, kind="cosine")  # [T, m, M]
        coords = normalised_coordinates(grid, device)
        spatial = torch.cdist(coords[other_index], coords[anchor_index])
        kernel = gibbs_kernel(1.0 - cosine + self.spatial_weight * spatial, self.epsilon)
        mu = torch.full((frames, n - num_anchors), 1.0 / (n - num_anchors), device=device)
        nu = torch.full((frames, num_anchors), 1.0 / num_anchors, device=device)
        plan = sinkhorn(kernel, mu, nu, self.max_iter, self.tol, joint_stop=True)
        if self.ot_mass == "per_anchor":
            plan = plan * num_anchors
        scale = self.intra_scale
        # the float32 plan times the bf16 rows on the tensor cores (float32 result), no float32 copy of the rows
        moved = matmul_float32(plan.transpose(1, 2).contiguous(), other_rows)  # [T, M, D]
        transported = torch.add(anchors, moved, alpha=scale).div_((1.0 + scale * plan.sum(dim=1))[..., None])
        nearest = cosine.argmax(dim=-1)
        joins = torch.zeros(frames, num_anchors, n - num_anchors, dtype=other_rows.dtype, device=device)
        joins.scatter_(1, nearest[:, None, :], 1.0)  # [T, M, m] one-hot: the sum of each anchor's nearest rows
        hard_count = torch.full((frames, num_anchors), scale, device=device).scatter_add(
            1, nearest, torch.ones_like(nearest, dtype=torch.float32)
        )
        hard = matmul_float32(joins, other_rows).add_(anchors, alpha=scale).div_(hard_count[..., None])
        slot.scatter_(1, other_index, plan.argmax(dim=-1))
        return torch.lerp(transported, hard, self.hard_mix), slot  # (1 - hard_mix) transported + hard_mix hard

    def inter_frame(
        self, anchors: torch.Tensor, owner: torch.Tensor, starts: list[int], lengths: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Phase II: keyframe anchors absorb later frames' anchors, all clips at once, one offset at a time."""
        anchors, owner = anchors.clone(), owner.clone()
        num_anchors = anchors.shape[1]
        device = anchors.device
        keyframes = anchors[int_tensor_on(tuple(starts), device)]
        for offset in range(1, max(lengths)):
            long_enough = tuple(i for i, length in enumerate(lengths) if length > offset)
            clips = int_tensor_on(long_enough, device)
            frame = int_tensor_on(tuple(starts[i] + offset for i in long_enough), device)
            sources, targets = anchors[frame], keyframes[clips]
            cosine = pairwise(sources, targets, kind="cosine")
            cost = 1.0 - cosine.clamp(-1 + 1e-6, 1 - 1e-6)
            cost = cost - cost.amin(dim=(1, 2), keepdim=True)
            cost = cost * (1.0 - math.exp(-(offset * offset) / (2.0 * self.sigma_t**2 + 1e-9)))
            uniform = torch.full((len(long_enough), num_anchors), 1.0 / num_anchors, device=device)
            kernel = gibbs_kernel(cost, self.epsilon)
            plan = sinkhorn(kernel, uniform, uniform, self.max_iter, self.tol, joint_stop=False)
            conditional = plan / plan.sum(dim=2, keepdim=True).clamp_min(1e-9)
            largest, target = conditional.max(dim=2)
            threshold = torch.quantile(largest.double(), self.keep_ratio, dim=1, keepdim=True)
            keep = largest < threshold
            absorbed = conditional * (~keep)[..., None]
            scale = self.inter_scale
            keyframes[clips] = (targets + scale * absorbed.transpose(1, 2) @ sources) / (
                1.0 + scale * absorbed.sum(dim=1)
            )[..., None]
            key_owner = (frame - offset)[:, None] * num_anchors + target
            owner[frame] = torch.where(keep, owner[frame], key_owner)
        anchors[int_tensor_on(tuple(starts), device)] = keyframes
        return anchors, owner

    @staticmethod
    def grouping(
        anchor_index: torch.Tensor, anchors: torch.Tensor, owner: torch.Tensor, slot: torch.Tensor, bound: int
    ) -> Grouping:
        """Groups of the flat tokens: one per surviving anchor (an anchor owning itself), in raster order, padded to
        ``bound`` (at least the number of survivors) slots."""
        frames, n = slot.shape
        num_owners = owner.numel()
        token_owner = owner.gather(1, slot).reshape(-1)
        alive = torch.zeros(num_owners, dtype=torch.bool, device=slot.device).index_fill_(0, owner.reshape(-1), True)
        survivors = first_set(alive, min(bound, num_owners))
        real = survivors < num_owners
        survivors = survivors.clamp(max=num_owners - 1)
        frame_offset = torch.arange(frames, device=slot.device)[:, None] * n
        representative = torch.where(real, (anchor_index + frame_offset).reshape(-1)[survivors], frames * n)
        group = torch.searchsorted(torch.where(real, survivors, num_owners), token_owner)
        weights = torch.ones(group.shape[0], device=group.device)
        rows = anchors.reshape(-1, anchors.shape[-1])[survivors]
        return Grouping(group, representative, weights, features=rows, size=alive.sum())
