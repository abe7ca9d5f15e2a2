"""Base class of every compressor, and the pipeline that chains the stages of several registered methods.

A compressor may act at three points of the pipeline (``design.md``):

* ``frame`` — before the vision encoder: choose frames (and sizes) to encode;
* ``token`` — between the encoder and the LLM: prune / merge / select visual tokens (the common case);
* ``llm`` — inside the decoder at a layer ``K``;
* ``decode`` — at every decoding step after the prefill, inside the decoder from a layer ``L`` on (DyCoke's dynamic
  KV pruning: layers ``>= L`` attend to a per-step subset of the cached visual keys);
* ``positions`` — a modifier of another method's token-stage output (PPE's multi-position embedding). A method with
  this stage may also have a token stage of its own, used when it is not chained after another token-stage method.

Token-stage methods subclass :class:`Compressor` and implement :meth:`Compressor.compress`; the base class does the
contract work once for all: retention validation, the exact count, identity at ``retention=1.0``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

from .assemble import identity
from .frame_stage import FrameSelection
from .llm_stage import AttentionQuery, LayerInputs, LayerReduction
from .tokens import CompressedTokens, VideoTokens, check_retention, target_count

if TYPE_CHECKING:
    import torch

    from .registry import MethodInfo

__all__ = ["Compressor", "Pipeline", "STAGES"]

STAGES = ("frame", "token", "positions", "llm", "decode")


class Compressor:
    """A registered compression method.

    Args:
        retention: fraction of visual tokens at the LLM input, in (0, 1]. The output count is
            ``target_count(grid, retention)``.
        exact: return exactly ``target_count`` tokens (default). ``False`` lets a method whose paper has a
            data-dependent count return its native count.
    """

    info: ClassVar[MethodInfo]
    #: LLM stage only: the decoder layer ``K`` where tokens are removed (set by the method's ``__init__``).
    llm_layer: int
    #: LLM stage only: whose attention at layer ``K - 1`` :meth:`reduce_in_llm` needs.
    llm_attention_query: ClassVar[AttentionQuery] = "none"
    #: decode stage only: the decoder layer ``L`` from which decoding steps attend to the kept visual keys only.
    decode_layer: int

    def __init__(self, retention: float = 1.0, *, exact: bool = True) -> None:
        self.retention = check_retention(retention)
        self.exact = bool(exact)

    # -- metadata shortcuts -------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.info.name

    @property
    def stages(self) -> tuple[str, ...]:
        return self.info.stages

    @property
    def needs_attention(self) -> bool:
        return self.info.needs_attention

    @property
    def needs_query(self) -> bool:
        return self.info.needs_query

    def stage(self, name: str) -> Compressor | None:
        """``self`` if this method provides stage ``name``, else ``None`` (same interface as :class:`Pipeline`)."""
        return self if name in self.stages else None

    # -- token stage ----------------------------------------------------------------------------------------------
    def __call__(self, tokens: VideoTokens) -> CompressedTokens:
        """Compress ``tokens`` to ``target_count(tokens.grid, self.retention)`` tokens."""
        if not isinstance(tokens, VideoTokens):
            raise ValueError(f"{self.name} expects VideoTokens, got {type(tokens).__name__}")
        if self.retention == 1.0 or "token" not in self.stages:
            return identity(tokens)
        if self.needs_attention and tokens.attention is None:
            raise ValueError(f"method {self.name!r} needs vision attention scores (VideoTokens.attention)")
        if self.needs_query and tokens.query is None:
            raise ValueError(f"method {self.name!r} needs the question embeddings (VideoTokens.query)")
        count = target_count(tokens.grid, self.retention)
        out = self.compress(tokens, count)
        if self.exact and out.num_tokens != count:
            raise RuntimeError(f"{self.name} returned {out.num_tokens} tokens, the exact count is {count}")
        return out

    def compress(self, tokens: VideoTokens, count: int) -> CompressedTokens:
        """Return ``count`` tokens (or the native count when ``exact=False``). Token-stage methods override this."""
        raise NotImplementedError(f"{type(self).__name__} has no token stage")

    # -- frame stage ----------------------------------------------------------------------------------------------
    def select_frames(
        self, frames: np.ndarray, timestamps: np.ndarray, question: str, *, frames_per_step: int = 1
    ) -> FrameSelection:
        """Choose which of the candidate ``frames`` (``uint8 [T, H, W, 3]``, at ``timestamps`` seconds) to encode.

        ``frames_per_step`` is the model's temporal group (2 on Qwen2.5-VL); the caller completes partial groups
        (:func:`~vidcompress.frame_stage.complete_groups`), so a method may ignore it. Frame-stage methods override
        this.
        """
        raise NotImplementedError(f"{type(self).__name__} has no frame stage")

    # -- LLM stage ------------------------------------------------------------------------------------------------
    def reduce_in_llm(self, inputs: LayerInputs) -> LayerReduction:
        """Decide at layer ``llm_layer`` which positions survive. LLM-stage methods override this."""
        raise NotImplementedError(f"{type(self).__name__} has no LLM stage")

    # -- decode stage ---------------------------------------------------------------------------------------------
    def prune_in_decode(
        self,
        attention: torch.Tensor,
        visual_mask: torch.Tensor,
        previous_attention: torch.Tensor | None,
        previous_keep: torch.Tensor | None,
    ) -> torch.Tensor:
        """``[B, S]`` bool: the prompt keys layers ``>= decode_layer`` attend to at this decoding step.

        ``attention`` ``[B, S]`` is the current token's attention at layer ``decode_layer - 1`` over the prompt;
        ``previous_attention`` / ``previous_keep`` are those of the previous step (``None`` at the first step).
        Decode-stage methods override this.
        """
        raise NotImplementedError(f"{type(self).__name__} has no decode stage")

    # -- positions stage ------------------------------------------------------------------------------------------
    def modify_positions(self, tokens: VideoTokens, out: CompressedTokens) -> CompressedTokens:
        """Rewrite another method's output (e.g. attach ``position_sets``). Positions-stage methods override this."""
        raise NotImplementedError(f"{type(self).__name__} has no positions stage")

    def params(self) -> dict[str, object]:
        """The parameters this instance was built with (for logs and result tables)."""
        return {key: getattr(self, key) for key in self.info.defaults}

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self.params().items())
        return f"{type(self).__name__}({args})"


def _yields_token_stage(member: Compressor) -> bool:
    """A member whose token stage gives way to a chained method's: a positions modifier or a frame selector."""
    return "token" in member.stages and ("positions" in member.stages or "frame" in member.stages)


class Pipeline:
    """Stages of several registered methods chained into one compressor, e.g. ``"keyframe+flashvid"``.

    Each stage is provided by at most one member; the token stage of the chain is the member that has one (identity
    when none has). A positions-stage member (PPE) yields its own token stage to another member that has one and
    rewrites that member's output instead; likewise a frame-stage member with a token stage of its own (``keyframe``)
    yields it to another member that has one (``"keyframe+mmr"``: keyframe's frames, MMR's tokens). The pipeline needs
    attention / the question when any member does.
    """

    def __init__(self, members: list[Compressor]) -> None:
        if len(members) < 2:
            raise ValueError("a pipeline chains at least two methods")
        self.members = members
        self.by_stage: dict[str, Compressor] = {}
        plain_token_stages = [m for m in members if "token" in m.stages and not _yields_token_stage(m)]
        for member in members:
            for stage in member.stages:
                if stage == "token" and _yields_token_stage(member) and plain_token_stages:
                    continue  # the modifier / frame selector leaves the token stage to the other method
                if stage in self.by_stage:
                    raise ValueError(
                        f"{self.by_stage[stage].name!r} and {member.name!r} both provide a {stage} stage; "
                        "a pipeline takes each stage from one method"
                    )
                self.by_stage[stage] = member

    @property
    def name(self) -> str:
        return "+".join(member.name for member in self.members)

    @property
    def stages(self) -> tuple[str, ...]:
        return tuple(stage for stage in STAGES if stage in self.by_stage)

    @property
    def needs_attention(self) -> bool:
        return any(member.needs_attention for member in self.members)

    @property
    def needs_query(self) -> bool:
        return any(member.needs_query for member in self.members)

    @property
    def retention(self) -> float:
        token_stage = self.by_stage.get("token")
        return token_stage.retention if token_stage is not None else 1.0

    def stage(self, name: str) -> Compressor | None:
        """The member that provides stage ``name``, or ``None``."""
        return self.by_stage.get(name)

    def __call__(self, tokens: VideoTokens) -> CompressedTokens:
        token_stage = self.by_stage.get("token")
        out = token_stage(tokens) if token_stage is not None else identity(tokens)
        modifier = self.by_stage.get("positions")
        if modifier is not None and modifier is not token_stage:
            out = modifier.modify_positions(tokens, out)
        return out

    def __repr__(self) -> str:
        return f"Pipeline({self.members!r})"
