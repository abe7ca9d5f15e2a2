"""The ``vidcompress`` command line: ``run``, ``methods``, ``demo``, ``bench``, ``eval`` and ``viz``.

Results go to stdout (``--json`` for machine-readable output), progress to stderr. Bad input exits with status 2 and
a one-line message, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]


def _progress(message: str) -> None:
    print(f"[vidcompress] {message}", file=sys.stderr, flush=True)


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs of ``--param`` options; values are JSON where they parse, strings otherwise."""
    params: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--param expects KEY=VALUE, got {pair!r}")
        key, raw = pair.split("=", 1)
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


def _format_stats(stats: dict[str, Any]) -> str:
    ms = stats["ms"]
    stages = ", ".join(f"{name} {value:.1f}" for name, value in ms.items())
    memory = "n/a (CPU)" if stats["peak_memory_mb"] is None else f"{stats['peak_memory_mb']:.0f} MiB"
    return (
        f"visual tokens: {stats['visual_tokens_in']} -> {stats['visual_tokens_out']} "
        f"(method {stats['method']}, retention {stats['retention']:g})\n"
        f"milliseconds: {stages}\n"
        f"peak GPU memory: {memory}"
    )


def _cmd_run(args: argparse.Namespace) -> int:
    from .api import wrap

    _progress(f"loading {args.model} with method {args.method!r} at retention {args.retention:g}")
    vlm = wrap(args.model, method=args.method, retention=args.retention, device=args.device,
               cuda_graph=args.cuda_graph, **parse_params(args.param))
    _progress(f"answering about {args.video}")
    answer = vlm.ask(
        args.video,
        args.question,
        num_frames=args.num_frames,
        fps=args.fps,
        max_frames=args.max_frames,
        max_new_tokens=args.max_new_tokens,
    )
    if args.json:
        print(json.dumps({"question": args.question, "answer": answer.text, "stats": answer.stats}, indent=2))
    else:
        if answer.stats["random_weights"]:
            print("NOTE: built-in tiny model with RANDOM weights: the answer is meaningless, the mechanics are real.")
        print(f"answer: {answer.text}")
        print(_format_stats(answer.stats))
    return 0


def _cmd_methods(args: argparse.Namespace) -> int:
    from .registry import available_methods, method_info

    rows = []
    for name in available_methods():
        info = method_info(name)
        defaults = {key: value for key, value in info.defaults.items() if key not in ("retention", "exact")}
        rows.append(
            {
                "name": name,
                "stages": list(info.stages),
                "needs_attention": info.needs_attention,
                "needs_query": info.needs_query,
                "paper": info.paper,
                "reference": info.reference,
                "defaults": defaults,
                "summary": info.summary,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2, default=repr))
        return 0
    header = ["method", "stages", "attention", "question", "defaults", "paper"]
    table = [
        [
            row["name"],
            "+".join(row["stages"]),
            "yes" if row["needs_attention"] else "-",
            "yes" if row["needs_query"] else "-",
            ", ".join(f"{k}={v!r}" for k, v in row["defaults"].items()) or "-",
            row["paper"],
        ]
        for row in rows
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *table)]
    for line in [header, ["-" * w for w in widths], *table]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip())
    return 0


def _demo_video(args: argparse.Namespace, folder: str) -> tuple[Any, str, str | None, Any, Any, bool]:
    """(video, question, truth, model, processor, random_weights) for the demo.

    The shipped test-bed micro model answers a question about a freshly generated test-bed video; without it the tiny
    random-weight Qwen2.5-VL runs on a moving square (its answer is noise, and labelled so).
    """
    from pathlib import Path

    from .synthetic import moving_square_video, write_video
    from .testbed.generator import FAMILIES, make_sample
    from .testbed.model import load_testbed_model, testbed_available

    path = Path(folder) / "demo.mp4"
    if testbed_available():
        family = FAMILIES.index(args.family)
        seed = 10_000_000 + len(FAMILIES) * args.seed + family  # outside every split: a video the model never saw
        sample = make_sample(seed)  # frames in memory, at the 2 fps the model was trained on (no lossy re-encoding)
        model, processor = load_testbed_model("cpu")
        return sample.video, sample.question, sample.answer, model, processor, False
    from .models.tiny import tiny_qwen2_5_vl

    write_video(path, moving_square_video(num_frames=16, size=112, seed=args.seed), fps=8.0)
    model, processor = tiny_qwen2_5_vl()
    return path, "what happens in the video ?", None, model, processor, True


def _cmd_demo(args: argparse.Namespace) -> int:
    import tempfile

    from .api import VideoLLM
    from .registry import get_compressor

    with tempfile.TemporaryDirectory() as folder:
        path, question, truth, model, processor, random_weights = _demo_video(args, folder)
        label = "tiny Qwen2.5-VL, RANDOM weights" if random_weights else "test-bed micro Qwen2.5-VL (synthetic videos)"
        _progress(f"generated a {'test-bed' if not random_weights else 'moving-square'} video; model: {label}")
        results = {}
        for method, retention in (("none", 1.0), (args.method, args.retention)):
            _progress(f"method {method!r}, retention {retention:g}")
            vlm = VideoLLM(model, processor, get_compressor(method, retention=retention), random_weights=random_weights)
            results[method] = vlm.ask(path, question, num_frames=args.num_frames, max_new_tokens=4)
    base, compressed = results["none"], results[args.method]
    if args.json:
        payload = {
            "model": label,
            "random_weights": random_weights,
            "question": question,
            "truth": truth,
            "answers": {name: {"text": a.text, "stats": a.stats} for name, a in results.items()},
        }
        print(json.dumps(payload, indent=2))
        return 0
    if random_weights:
        print("vidcompress demo: tiny Qwen2.5-VL with RANDOM weights (no trained test-bed model installed);")
        print("the answers are meaningless, the token and time accounting is real.\n")
    else:
        print("vidcompress demo: the test-bed micro model on a freshly generated synthetic video. It is a small model")
        print("trained on the project's synthetic suite, not a real video LLM; see vidcompress/testbed/weights/README.md.\n")
    print(f"question: {question}")
    if truth is not None:
        print(f"truth:    {truth}")
    for name, answer in results.items():
        print(f"\n[{name}] answer: {answer.text}")
        print(_format_stats(answer.stats))
    saved_tokens = base.stats["visual_tokens_in"] - compressed.stats["visual_tokens_out"]
    saved_prefill = base.stats["ms"]["prefill"] - compressed.stats["ms"]["prefill"]
    print(f"\n{args.method} at {args.retention:g} kept {compressed.stats['visual_tokens_out']} of "
          f"{base.stats['visual_tokens_in']} visual tokens ({saved_tokens} saved); prefill {saved_prefill:+.1f} ms "
          "saved on this machine.")
    return 0


#: Sub-commands implemented in their own modules: name -> ("module:function(argv) -> int", help).
DELEGATED = {
    "bench": ("vidcompress.bench.cli:bench_command", "speed and memory benchmark (see `vidcompress bench --help`)"),
    "eval": ("vidcompress.testbed.evaluate:eval_command", "accuracy on the synthetic test-bed (`vidcompress eval --help`)"),
    "viz": ("vidcompress.viz:viz_command", "draw the tokens a method keeps (`vidcompress viz --help`)"),
}


def _run_delegated(name: str, argv: list[str]) -> int:
    module, function = DELEGATED[name][0].split(":")
    return getattr(importlib.import_module(module), function)(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidcompress", description="Visual-token compression for video LLMs.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="answer one question about one video")
    run.add_argument("video", help="video file")
    run.add_argument("question")
    run.add_argument("--model", required=True, help="hub id, local path, or tiny-qwen2.5-vl / tiny-llava-onevision")
    run.add_argument("--method", default="none", help="registered method or chain (see `vidcompress methods`)")
    run.add_argument("--retention", type=float, default=1.0, help="fraction of visual tokens kept, in (0, 1]")
    run.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="method parameter (repeatable)")
    sampling = run.add_mutually_exclusive_group()
    sampling.add_argument("--num-frames", type=int, default=None)
    sampling.add_argument("--fps", type=float, default=None)
    run.add_argument("--max-frames", type=int, default=None)
    run.add_argument("--max-new-tokens", type=int, default=64)
    run.add_argument("--device", default=None)
    run.add_argument("--cuda-graph", action="store_true",
                     help="replay the token stage as a CUDA graph (pays off from the second call of a signature)")
    run.add_argument("--json", action="store_true", help="machine-readable output")
    run.set_defaults(handler=_cmd_run)

    methods = commands.add_parser("methods", help="list the registered methods")
    methods.add_argument("--json", action="store_true")
    methods.set_defaults(handler=_cmd_methods)

    demo = commands.add_parser("demo", help="run a built-in model on a generated video")
    demo.add_argument("--method", default="uniform")
    demo.add_argument("--retention", type=float, default=0.25)
    demo.add_argument("--num-frames", type=int, default=32)
    demo.add_argument("--family", default="scene", choices=["static", "brief", "order", "motion", "scene"],
                      help="test-bed question family (the shipped micro model has learned 'scene' best)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--json", action="store_true")
    demo.set_defaults(handler=_cmd_demo)

    for name, (_, help_text) in DELEGATED.items():  # listed for --help; main() hands their arguments over whole
        commands.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in DELEGATED:
            return _run_delegated(argv[0], argv[1:])
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except (ValueError, FileNotFoundError, OSError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"vidcompress: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
