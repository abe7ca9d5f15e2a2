"""``flashvlm``: FlashVLM's text-guided selection (log-domain fusion of saliency and question relevance)."""

from __future__ import annotations

import torch

from vidcompress.assemble import select_tokens
from vidcompress.compressor import Compressor
from vidcompress.kernels import diversity_partition
from vidcompress.ops.budgets import int_tensor_on
from vidcompress.ops.similarity import minmax, query_relevance, unit_vectors
from vidcompress.registry import register_compressor
from vidcompress.tokens import CompressedTokens, VideoTokens

from .uniform import frame_budgets

LOG_FLOOR = 1e-6


@register_compressor(
    "flashvlm",
    needs_attention=True,
    needs_query=True,
    paper="FlashVLM: Text-Guided Visual Token Selection for Large Multimodal Models, arXiv 2512.20561",
    reference="CaiKaitong/FlashVLM (llava/model/llava_arch.py: encode_images)",
)
class FlashVLM(Compressor):
    """FlashVLM: fuse vision saliency with question relevance, keep the top half, then a diverse background half.

    Per frame (temporal group on Qwen2.5-VL), with the budget split evenly over frames:

    1. ``A = minmax(attention received)``.
    2. Text relevance: ``s_i = Σ_q softmax_q(M_iq / τ_text) M_iq`` with ``M = cos(features, query)``; then
       ``softmax_i(s / τ_sharp)``, power ``γ``, min-max, damp every score below the ``1 − top_p`` quantile by
       ``damping``, min-max again → ``R``.
    3. ``score = minmax(exp((1 − η)·log max(A, 1e-6) + η·log max(R, 1e-6)))``.
    4. The ``⌊important_ratio · budget⌋`` best-scoring tokens are kept; the others, in descending score order, go
       through VisPruner's diversity partition until ``budget − ⌊important_ratio · budget⌋`` remain: split them
       into even / odd positions, drop up to ``partition_step`` even-position tokens most similar to any odd one,
       and put the surviving even tokens (by descending similarity) before the odd ones.

    Defaults are the reference constants (``τ_text 0.05``, ``τ_sharp 0.01``, ``γ 2.5``, ``top_p 0.005``,
    ``damping 0.1``, ``η 0.5``, ``important_ratio 0.5``, ``partition_step 8``); sorts are stable, so ties go to the
    lower index where the reference's unstable sort is arbitrary.

    Differences from the reference: the query is the question's word embeddings (``VideoTokens.query``), taken by the
    adapter from the question wherever it stands in the prompt. The reference LLaVA path embeds all prompt text;
    its Qwen2.5-VL file embeds only the text *before* the first visual token, which with "video, then question"
    templates never contains the question — we fix that by always scoring against the question. The reference
    Qwen file does not compress video at all (the video branch is never pruned); we prune per temporal group. Its
    budget is an absolute 196 tokens on Qwen and 64 / 128 / 192 of 576 per image on LLaVA-1.5; ours is
    ``retention`` split evenly over frames (e.g. 128 / 576 ↔ ``retention≈0.222``). Similarities use the projected
    features on both models (the LLaVA reference partitions on pre-projector CLIP features). The LLaVA reference
    normalises the text embeddings before its "norm gating", which makes the gating a no-op (factor
    ``1 / (1 + 1e-6)``); default reproduces that, ``norm_gating=True`` applies the intended weighting by raw
    embedding norms (``‖e_q‖ / max_q ‖e_q‖``).

    Args:
        retention: fraction of visual tokens kept.
        exact: accepted for the common interface; FlashVLM always returns exactly ``target_count`` tokens.
        eta: weight ``η`` of text relevance in the log-domain fusion, in ``[0, 1]``.
        important_ratio: fraction ``α`` of each frame's budget taken by top score, in ``[0, 1]``.
        text_temperature, sharpen_temperature, power, top_p, damping: text-relevance constants (see above).
        partition_step: most tokens dropped per partition round.
        norm_gating: weight question tokens by their raw embedding norm (off in the reference, see above).
    """

    def __init__(
        self,
        retention: float = 1.0,
        *,
        exact: bool = True,
        eta: float = 0.5,
        important_ratio: float = 0.5,
        text_temperature: float = 0.05,
        sharpen_temperature: float = 0.01,
        power: float = 2.5,
        top_p: float = 0.005,
        damping: float = 0.1,
        partition_step: int = 8,
        norm_gating: bool = False,
    ) -> None:
        super().__init__(retention, exact=exact)
        for name, value in (("eta", eta), ("important_ratio", important_ratio), ("top_p", top_p), ("damping", damping)):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
        for name, value in (("text_temperature", text_temperature), ("sharpen_temperature", sharpen_temperature)):
            if not float(value) > 0.0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        if not float(power) > 0.0:
            raise ValueError(f"power must be positive, got {power!r}")
        if isinstance(partition_step, bool) or not isinstance(partition_step, int) or partition_step < 1:
            raise ValueError(f"partition_step must be a positive int, got {partition_step!r}")
        self.eta = float(eta)
        self.important_ratio = float(important_ratio)
        self.text_temperature = float(text_temperature)
        self.sharpen_temperature = float(sharpen_temperature)
        self.power = float(power)
        self.top_p = float(top_p)
        self.damping = float(damping)
        self.partition_step = partition_step
        self.norm_gating = bool(norm_gating)

    def text_relevance(self, features: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """``[T, N]`` sharpened question relevance ``R`` in ``[0, 1]`` (steps 2 of the class docstring)."""
        if self.norm_gating:
            norms = query.to(torch.float32).norm(dim=-1, keepdim=True)
            query = unit_vectors(query) * norms / norms.max()
        relevance = query_relevance(features, query, temperature=self.text_temperature)
        relevance = torch.softmax(relevance / self.sharpen_temperature, dim=-1) ** self.power
        relevance = minmax(relevance)
        threshold = torch.quantile(relevance, 1.0 - self.top_p, dim=-1, keepdim=True)
        relevance = torch.where(relevance >= threshold, relevance, relevance * self.damping)
        return minmax(relevance)

    def fused_score(self, tokens: VideoTokens) -> torch.Tensor:
        """``[T, N]`` fused score (steps 1–3)."""
        assert tokens.attention is not None and tokens.query is not None  # checked by Compressor.__call__
        saliency = minmax(tokens.attention.to(torch.float32)).clamp(min=LOG_FLOOR)
        relevance = self.text_relevance(tokens.features, tokens.query).clamp(min=LOG_FLOOR)
        fused = torch.exp((1.0 - self.eta) * torch.log(saliency) + self.eta * torch.log(relevance))
        return minmax(fused)

    def partition(self, similarity: torch.Tensor, residual: torch.Tensor, keep: int) -> torch.Tensor:
        """VisPruner's diversity partition of ``residual [B, R]`` (token indices per row) down to ``keep`` tokens,
        on the rows' cosine matrices ``similarity [B, N, N]`` (one Triton launch on CUDA)."""
        return diversity_partition(similarity, residual, keep, self.partition_step)

    def compress(self, tokens: VideoTokens, count: int) -> CompressedTokens:
        t, h, w = tokens.grid
        n = h * w
        order = torch.sort(self.fused_score(tokens), dim=1, descending=True, stable=True).indices
        unit = unit_vectors(tokens.features)
        similarity = unit @ unit.transpose(1, 2)  # [T, N, N] float32
        budgets = frame_budgets(t, count)
        kept = []
        for budget in sorted(set(budgets)):  # at most two distinct budgets: frames batched by budget
            frames = int_tensor_on(tuple(f for f, b in enumerate(budgets) if b == budget), order.device)
            important = int(self.important_ratio * budget)
            diverse = self.partition(similarity[frames], order[frames, important:], budget - important)
            chosen = torch.cat([order[frames, :important], diverse], dim=1)
            kept.append((chosen + frames[:, None] * n).reshape(-1))
        return select_tokens(tokens, torch.cat(kept))
