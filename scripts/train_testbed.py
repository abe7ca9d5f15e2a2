"""Train the test-bed's micro Qwen2.5-VL on generated videos and save it with its processor and a model card.

    python scripts/train_testbed.py --steps 4000 --batch-size 64            # GPU: a few minutes
    python scripts/train_testbed.py --steps 5 --train-videos 64 --batch-size 4 --out /tmp/tb   # CPU smoke test

The videos are generated once up front (in parallel) and kept as uint8 on the training device; every step draws a
batch of videos and one of each video's questions. Pixels and prompts go through the model's own processor
(:mod:`vidcompress.testbed.training`), positions through the project's M-RoPE, so the uncompressed
``vidcompress.wrap(model, processor=processor).ask(...)`` path sees exactly the training-time inputs. Loss on the
answer tokens only; AdamW; linear warm-up then cosine decay over ``--steps`` or ``--max-minutes``, whichever
ends first (the schedule follows the larger of the two progress fractions); bf16 autocast on CUDA.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vidcompress.testbed.generator import (
    FAMILIES,
    FRAMES,
    SIZE,
    TESTBED_VERSION,
    TRAIN_SEED_START,
    answer_choices,
    make_sample,
    split_seeds,
    train_seeds,
)
from vidcompress.testbed.model import WEIGHTS_DIR, build_testbed_model
from vidcompress.testbed.training import (
    PromptBuilder,
    answer_logits,
    register_block_attention,
    video_patches,
    vision_plan,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--train-videos", type=int, default=24000)
    parser.add_argument("--eval-videos", type=int, default=500, help="validation videos scored during training")
    parser.add_argument("--test-videos", type=int, default=500, help="test videos scored at the end (all: 500)")
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--max-minutes", type=float, default=None, help="stop training after this long")
    parser.add_argument("--workers", type=int, default=None, help="processes generating videos")
    parser.add_argument("--device", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", default=None, help="start from a saved model directory instead of random weights")
    parser.add_argument(
        "--resume", default=None, help="optimizer state file saved by --state: continue that run's schedule (with --init)"
    )
    parser.add_argument("--state", default=None, help="save the optimizer state, step and elapsed time here at the end")
    parser.add_argument(
        "--session-minutes", type=float, default=None, help="stop this call after this long; the schedule runs on"
    )
    parser.add_argument("--out", default=str(WEIGHTS_DIR))
    args = parser.parse_args(argv)
    for name in ("steps", "batch_size", "train_videos", "eval_videos", "test_videos", "eval_every"):
        if getattr(args, name) <= 0:
            raise SystemExit(f"--{name.replace('_', '-')} must be positive")
    if args.resume and not args.init:
        raise SystemExit("--resume continues a saved run: pass its weights with --init too")
    return args


_VIDEOS: np.ndarray | None = None  # shared-memory chunk the forked workers write videos into
_CHUNK = 2048  # videos per shared-memory chunk (keeps /dev/shm use to ~2.5 GB)


def _fill(job: tuple[int, int]) -> tuple[list[tuple[str, str]], str, str, str]:
    index, seed = job
    sample = make_sample(seed)
    _VIDEOS[index] = sample.video
    return sample.questions, sample.family, sample.question, sample.answer


def generate(seeds: list[int], workers: int | None, device: torch.device) -> dict[str, object]:
    """Videos (uint8 ``[N, T, H, W, 3]`` on ``device``), every question of each, family, designated question, answer.

    Workers write straight into a shared-memory chunk (pickling 1.2 MB per video through pipes is the bottleneck),
    which is copied to ``device`` before the next chunk is made.
    """
    global _VIDEOS
    videos = torch.empty((len(seeds), FRAMES, SIZE, SIZE, 3), dtype=torch.uint8, device=device)
    chunk = torch.empty((min(_CHUNK, len(seeds)), FRAMES, SIZE, SIZE, 3), dtype=torch.uint8).share_memory_()
    _VIDEOS = chunk.numpy()
    columns: dict[str, list] = {"questions": [], "family": [], "question": [], "answer": []}
    with get_context("fork").Pool(workers) as pool, tqdm(total=len(seeds), desc="videos") as progress:
        for start in range(0, len(seeds), _CHUNK):
            part = seeds[start : start + _CHUNK]
            for row in pool.imap(_fill, enumerate(part), chunksize=32):
                for key, value in zip(columns, row):
                    columns[key].append(value)
                progress.update(1)
            videos[start : start + len(part)] = chunk[: len(part)].to(device)
    _VIDEOS = None
    return {"videos": videos, **columns}


def evaluate(model, prompts: PromptBuilder, processor, data: dict, device, batch_size: int) -> dict[str, float]:
    """Accuracy per family (and ``overall``) of the first answer token, greedy, on each video's designated question."""
    model.eval()
    hits: dict[str, list[bool]] = defaultdict(list)
    with torch.no_grad(), _autocast(device):
        for start in range(0, len(data["family"]), batch_size):
            stop = min(start + batch_size, len(data["family"]))
            videos = data["videos"][start:stop].to(device)
            batch = prompts.batch(data["question"][start:stop], data["answer"][start:stop]).to(device)
            pixels, grid = video_patches(processor, videos)
            _, logits = answer_logits(model, batch, pixels, grid, _plan(model, grid))
            predicted = logits.argmax(-1)
            truth = batch.input_ids[torch.arange(stop - start, device=device), batch.answer_start]
            for family, hit in zip(data["family"][start:stop], (predicted == truth).tolist()):
                hits[family].append(hit)
    model.train()
    accuracy = {family: float(np.mean(hits[family])) for family in FAMILIES if hits[family]}
    accuracy["overall"] = float(np.mean([h for family in hits for h in hits[family]]))
    return accuracy


_PLANS: dict[tuple, dict] = {}


def _plan(model, grid: torch.Tensor) -> dict:
    """The vision bookkeeping of ``grid``, made once per distinct batch of grids."""
    key = tuple(map(tuple, grid.tolist()))
    if key not in _PLANS:
        _PLANS[key] = vision_plan(model, grid)
    return _PLANS[key]


def chance(data: dict) -> dict[str, float]:
    """Accuracy of guessing uniformly among each question's possible answers, per family."""
    per_family: dict[str, list[float]] = defaultdict(list)
    for family, question in zip(data["family"], data["question"]):
        per_family[family].append(1.0 / len(answer_choices(question)))
    result = {family: float(np.mean(per_family[family])) for family in FAMILIES if per_family[family]}
    result["overall"] = float(np.mean([v for values in per_family.values() for v in values]))
    return result


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)


def learning_rate_factor(progress: float, step: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from 1 to 0 as ``progress`` goes from 0 to 1."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def model_card(args: argparse.Namespace, argv: list[str], config, steps: int, minutes: float, test: dict, odds: dict) -> str:
    table = "\n".join(
        f"| {family} | {test[family]:.3f} | {odds[family]:.3f} |" for family in (*FAMILIES, "overall") if family in test
    )
    return f"""# vidcompress test-bed micro model

A `Qwen2_5_VLForConditionalGeneration` with a small config, trained from scratch on the synthetic video-QA suite of
`vidcompress.testbed` (test-bed version {TESTBED_VERSION}). It is the project's in-house accuracy signal and demo
model: **a synthetic test-bed, not a real benchmark**, and its answers mean nothing outside these videos.

## Config

- vision: {config.vision_config.depth} blocks, width {config.vision_config.hidden_size}, window {config.vision_config.window_size} px, full attention in blocks {list(config.vision_config.fullatt_block_indexes)}, 14 px patches, 2-frame tubelets, 2x2 merge
- language model: {config.text_config.num_hidden_layers} layers, width {config.text_config.hidden_size}, {config.text_config.num_attention_heads} heads ({config.text_config.num_key_value_heads} KV), MLP {config.text_config.intermediate_size}, M-RoPE sections {list(config.text_config.rope_parameters["mrope_section"])}
- word-level tokenizer, {config.text_config.vocab_size} tokens; prompt `<|im_start|> user <video> question <|im_end|> <|im_start|> assistant`
- input: 32 frames of 112x112 px at 2 fps (16 temporal steps of 4x4 = 256 visual tokens)

## Training

- command: `python scripts/train_testbed.py {" ".join(argv)}`
- steps: {steps} at batch {args.batch_size} ({minutes:.1f} min), AdamW lr {args.lr} (warm-up {args.warmup}, cosine), weight decay {args.weight_decay}, bf16 autocast on CUDA; loss on answer tokens only
- data: {args.train_videos} training videos, seeds {TRAIN_SEED_START}..{TRAIN_SEED_START + args.train_videos - 1}, every question of each video; validation seeds 500..999; test seeds 0..499 (fixed)

## Accuracy on the test split ({args.test_videos} videos, uncompressed, first answer word)

| family | accuracy | chance |
| --- | --- | --- |
{table}
"""


def save(model, processor, out: Path, card: str, metrics: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.model.visual.config._attn_implementation = "sdpa"
    model.float().save_pretrained(out)
    processor.save_pretrained(out)
    (out / "README.md").write_text(card)
    (out / "training_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(args.seed)
    if args.init:
        from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(args.init, dtype=torch.float32)
        processor = Qwen2_5_VLProcessor.from_pretrained(args.init)
    else:
        model, processor = build_testbed_model(seed=args.seed)
    model.to(device).train()
    torch.backends.cudnn.benchmark = True
    register_block_attention(model)
    prompts = PromptBuilder(processor, model.config)

    train = generate(train_seeds(args.train_videos), args.workers, device)
    validation = generate(list(split_seeds("validation"))[: args.eval_videos], args.workers, device)
    test = generate(list(split_seeds("test"))[: args.test_videos], args.workers, device)
    for data in (train, validation, test):  # every question of the split, cached once
        for questions in data["questions"]:
            for question, _ in questions:
                prompts.prompt(question)
    videos = train["videos"]

    optimizer = torch.optim.AdamW(
        model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=args.weight_decay, fused=device.type == "cuda"
    )
    step, earlier_seconds, history = 0, 0.0, []
    if args.resume:
        state = torch.load(args.resume, map_location=device, weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        step, earlier_seconds, history = state["step"], state["elapsed_s"], state["history"]
    rng = np.random.default_rng([args.seed, step])
    started = time.perf_counter()
    budget = args.max_minutes * 60 if args.max_minutes else math.inf
    session_budget = args.session_minutes * 60 if args.session_minutes else math.inf
    progress_bar = tqdm(total=args.steps, initial=step, desc="train")
    while True:
        session = time.perf_counter() - started
        progress = max(step / args.steps, (earlier_seconds + session) / budget)
        if progress >= 1.0 or session >= session_budget:
            break
        for group in optimizer.param_groups:
            group["lr"] = args.lr * learning_rate_factor(progress, step, args.warmup)
        chosen = rng.integers(0, len(train["family"]), size=args.batch_size)
        pairs = [train["questions"][i][rng.integers(len(train["questions"][i]))] for i in chosen]
        batch = prompts.batch([q for q, _ in pairs], [a for _, a in pairs]).to(device)
        pixels, grid = video_patches(processor, videos[torch.from_numpy(chosen).to(device)])
        with _autocast(device):
            loss, _ = answer_logits(model, batch, pixels, grid, _plan(model, grid))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        progress_bar.update(1)
        if step % 50 == 0:
            progress_bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % args.eval_every == 0:
            accuracy = evaluate(model, prompts, processor, validation, device, args.batch_size)
            history.append({"step": step, "loss": loss.item(), "validation": accuracy})
            tqdm.write(f"step {step} loss {loss.item():.4f} validation {json.dumps(accuracy)}")
    progress_bar.close()
    minutes = (earlier_seconds + time.perf_counter() - started) / 60
    if args.state:
        torch.save(
            {"optimizer": optimizer.state_dict(), "step": step, "elapsed_s": minutes * 60, "history": history},
            args.state,
        )
    final_validation = evaluate(model, prompts, processor, validation, device, args.batch_size)
    test_accuracy = evaluate(model, prompts, processor, test, device, args.batch_size)
    odds = chance(test)
    print(f"trained {step} steps in {minutes:.1f} min; validation {json.dumps(final_validation)}")
    print(f"test {json.dumps(test_accuracy)}\nchance {json.dumps(odds)}")
    metrics = {
        "testbed_version": TESTBED_VERSION,
        "steps": step,
        "minutes": minutes,
        "args": vars(args),
        "validation": final_validation,
        "test": test_accuracy,
        "chance": odds,
        "history": history,
    }
    save(model, processor, Path(args.out), model_card(args, argv, model.config, step, minutes, test_accuracy, odds), metrics)
    print(f"saved to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
