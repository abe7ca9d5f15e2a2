"""Write the method-comparison notebooks from the cell sources below, and optionally execute the first one.

    python scripts/make_notebooks.py              # (re)write notebooks/compare_methods.ipynb and real_model.ipynb
    python scripts/make_notebooks.py --execute    # then run compare_methods.ipynb top to bottom on the CPU, writing
                                                  # its figures under docs/figures/ (what CI does)
    python scripts/make_notebooks.py --execute --quick --figures /tmp/figs   # a small run (the test suite's)

The notebooks are committed without outputs, so a review reads the cell sources here; the executed figures are the
PNG files under ``docs/figures/``. ``compare_methods.ipynb`` reads two environment variables: ``VIDCOMPRESS_FIGURES``
(where the figures go, default ``../docs/figures`` from ``notebooks/``) and ``VIDCOMPRESS_NOTEBOOK_QUICK=1`` (fewer
methods, retentions and videos).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
FIGURES = ROOT / "docs" / "figures"

COMPARE_METHODS = [
    new_markdown_cell(
        "# Compare compression methods\n\n"
        "Every registered method at several retentions on the same videos and questions: answers, accuracy, visual\n"
        "tokens and time per stage (`vidcompress.compare`), then pictures of which tokens each method kept\n"
        "(`vidcompress.viz`). The notebook uses the trained **test-bed** micro model when it is installed\n"
        "(`vidcompress.testbed`), and otherwise the built-in tiny Qwen2.5-VL with **random weights**, whose answers\n"
        "and accuracies mean nothing (every table and figure says which). Token counts, overlays and timings are real\n"
        "either way. CI runs it top to bottom on the CPU and commits the figures under `docs/figures/`."
    ),
    new_code_cell(
        "import os\n"
        "from pathlib import Path\n\n"
        "import numpy as np\n"
        "from IPython.display import Image, display\n\n"
        "import vidcompress\n"
        "from vidcompress import viz\n"
        "from vidcompress.compare import compare, compress_video, default_model, load_model\n\n"
        'QUICK = os.environ.get("VIDCOMPRESS_NOTEBOOK_QUICK") == "1"\n'
        'FIGURES = Path(os.environ.get("VIDCOMPRESS_FIGURES", "../docs/figures"))\n'
        "FIGURES.mkdir(parents=True, exist_ok=True)\n\n"
        "model = load_model(default_model())   # loaded once, shared by every method and retention\n"
        "print(model.label)"
    ),
    new_markdown_cell(
        "## Videos, questions and answers\n\n"
        "With the test-bed: the first items of its fixed test split (five question families: static detail, brief\n"
        "events, order, motion, scene cuts). Without it: generated clips of a square moving right, or mirrored to move\n"
        "left, asked for the direction."
    ),
    new_code_cell(
        'if model.name == "testbed":\n'
        "    from vidcompress.testbed.evaluate import chance_accuracy, load_split\n\n"
        '    samples = load_split("test", limit=4 if QUICK else int(os.environ.get("VIDCOMPRESS_NOTEBOOK_VIDEOS", 10)))\n'
        "    videos = [s.video for s in samples]\n"
        "    questions = [s.question for s in samples]\n"
        "    truths = [s.answer for s in samples]\n"
        '    chance = chance_accuracy(samples)["overall"]\n'
        "    sampling = {}\n"
        "else:\n"
        "    from vidcompress.synthetic import moving_square_video\n\n"
        "    count = 2 if QUICK else 4\n"
        "    clips = [moving_square_video(num_frames=16, size=112, seed=seed) for seed in range(count)]\n"
        "    videos = [clip if i % 2 == 0 else clip[:, :, ::-1].copy() for i, clip in enumerate(clips)]\n"
        '    questions = "where is the square moving ?"\n'
        '    truths = ["right" if i % 2 == 0 else "left" for i in range(count)]\n'
        "    chance = 0.5\n"
        '    sampling = {"num_frames": 8}\n'
        'print(len(videos), "videos; truths:", truths)'
    ),
    new_markdown_cell(
        "## Every method at every retention\n\n"
        "`retention` is the fraction of visual tokens at the LLM input. `none` runs at 1.0 only and FastV (which prunes\n"
        "inside the LLM) at an input retention of 1.0 only: the other pairs are skipped with the registry's reason."
    ),
    new_code_cell(
        "layers = model.model.config.text_config.num_hidden_layers\n"
        'params = {"fastv": {"layer": min(2, layers - 1)}}   # the tiny model has only 2 decoder layers\n'
        "if QUICK:\n"
        '    methods, retentions = ["none", "uniform", "holitom", "fastv"], [1.0, 0.25]\n'
        "else:\n"
        "    methods, retentions = vidcompress.available_methods(), [1.0, 0.5, 0.25, 0.1]\n"
        "table = compare(videos, questions, methods, retentions, model=model, truths=truths, params=params,\n"
        "                max_new_tokens=2, **sampling)\n"
        "print(table.format())"
    ),
    new_code_cell(
        "for row in table[:6]:\n"
        '    print({key: row[key] for key in ("method", "retention", "video", "answer", "truth", "correct",\n'
        '                                      "visual_tokens_out", "ttft_ms")})'
    ),
    new_markdown_cell("## Accuracy and time to first token against retention"),
    new_code_cell(
        'path = viz.save_figure(viz.plot_accuracy(table, chance=chance), FIGURES / "accuracy_vs_retention.png")\n'
        "display(Image(filename=str(path)))\n"
        'path = viz.save_figure(viz.plot_ttft(table), FIGURES / "ttft_vs_retention.png")\n'
        "display(Image(filename=str(path)))"
    ),
    new_markdown_cell(
        "## Which tokens each method keeps\n\n"
        "One video, every token-stage method at retention 0.25. Dimmed cells: dropped tokens. Tinted and outlined\n"
        "cells: tokens merged into one LLM token (one colour per group, across frames too). Untouched cells: kept.\n"
        "On Qwen2.5-VL one token covers a 28x28 px cell of two consecutive frames. The bars count the LLM tokens each\n"
        "temporal step received."
    ),
    new_code_cell(
        "RETENTION = 0.25\n"
        "video = videos[0]\n"
        "question = questions if isinstance(questions, str) else questions[0]\n"
        "token_methods = [m for m in methods if m != 'none' and 'token' in vidcompress.method_info(m).stages]\n"
        "compressions = {}\n"
        "for method in token_methods:\n"
        "    try:\n"
        "        comp = compress_video(video, method, RETENTION, model=model, question=question, **sampling)\n"
        "    except ValueError as error:   # the method refuses this input at this retention\n"
        '        print(f"{method}: {error}")\n'
        "        continue\n"
        "    compressions[method] = comp\n"
        '    path = viz.save_figure(viz.plot_overlay(comp), FIGURES / f"overlay_{method}.png")\n'
        "    display(Image(filename=str(path)))"
    ),
    new_code_cell(
        'path = viz.save_figure(viz.plot_frame_budgets(compressions), FIGURES / "frame_budgets.png")\n'
        "display(Image(filename=str(path)))\n"
        "print(sorted(p.name for p in FIGURES.glob('*.png')))"
    ),
]

REAL_MODEL = [
    new_markdown_cell(
        "# Compare methods on a real checkpoint (GPU)\n\n"
        "The same comparison as `compare_methods.ipynb` on a Qwen2.5-VL or LLaVA-OneVision checkpoint given by hub id\n"
        "or local path, on your own video and question. Set the parameters below and run all cells. Published with its\n"
        "outputs cleared; `peak_memory_mb` is measured on CUDA only."
    ),
    new_code_cell(
        '# Parameters\n'
        'MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"      # or "llava-hf/llava-onevision-qwen2-7b-ov-hf", or a local path\n'
        'VIDEO = "clip.mp4"                           # a video file\n'
        'QUESTION = "What is the man holding?"\n'
        "TRUTH = None                                 # the expected answer, if known (scores `correct`)\n"
        "NUM_FRAMES = 32\n"
        'METHODS = ["none", "uniform", "random", "divprune", "visionzip", "holitom", "fastvid", "flashvid", "vidcom2"]\n'
        "RETENTIONS = [1.0, 0.5, 0.25, 0.1]\n"
        'OUTPUT = "figures"                           # where the PNG files go'
    ),
    new_code_cell(
        "from pathlib import Path\n\n"
        "import torch\n"
        "from IPython.display import Image, display\n\n"
        "from vidcompress import viz\n"
        "from vidcompress.compare import compare, compress_video, load_model\n\n"
        "figures = Path(OUTPUT)\n"
        "figures.mkdir(parents=True, exist_ok=True)\n"
        'device = "cuda" if torch.cuda.is_available() else "cpu"\n'
        "model = load_model(MODEL, device=device, dtype=torch.bfloat16 if device == 'cuda' else torch.float32)\n"
        "print(model.label, 'on', device)"
    ),
    new_code_cell(
        "table = compare([VIDEO], [QUESTION], METHODS, RETENTIONS, model=model, truths=[TRUTH],\n"
        "                num_frames=NUM_FRAMES, max_new_tokens=32)\n"
        "print(table.format())\n"
        "for row in table:\n"
        "    print(f\"{row['method']:>10} {row['retention']:<5g} {row['answer']!r}\")"
    ),
    new_code_cell(
        'path = viz.save_figure(viz.plot_ttft(table), figures / "ttft_vs_retention.png")\n'
        "display(Image(filename=str(path)))\n"
        "if TRUTH is not None:\n"
        '    path = viz.save_figure(viz.plot_accuracy(table), figures / "accuracy_vs_retention.png")\n'
        "    display(Image(filename=str(path)))"
    ),
    new_code_cell(
        "RETENTION = 0.25\n"
        "compressions = {}\n"
        "for method in [m for m in METHODS if m != 'none']:\n"
        "    try:\n"
        "        comp = compress_video(VIDEO, method, RETENTION, model=model, question=QUESTION, num_frames=NUM_FRAMES)\n"
        "    except ValueError as error:   # the method refuses this input at this retention\n"
        '        print(f"{method}: {error}")\n'
        "        continue\n"
        "    compressions[method] = comp\n"
        '    path = viz.save_figure(viz.plot_overlay(comp), figures / f"overlay_{method}.png")\n'
        "    display(Image(filename=str(path)))\n"
        'path = viz.save_figure(viz.plot_frame_budgets(compressions), figures / "frame_budgets.png")\n'
        "display(Image(filename=str(path)))"
    ),
]


def build(cells: list) -> nbformat.NotebookNode:
    notebook = new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    for index, cell in enumerate(notebook.cells):  # stable ids keep the files byte-identical between runs
        cell["id"] = f"cell-{index:02d}"
    return notebook


NOTEBOOK_CELLS = {"compare_methods.ipynb": COMPARE_METHODS, "real_model.ipynb": REAL_MODEL}


def notebook_text(name: str) -> str:
    """The committed text of notebook ``name``."""
    return nbformat.writes(build(NOTEBOOK_CELLS[name])) + "\n"


def write_notebooks(folder: Path = NOTEBOOKS) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in NOTEBOOK_CELLS:
        path = folder / name
        path.write_text(notebook_text(name))
        paths.append(path)
    return paths


def execute(path: Path, figures: Path, quick: bool, timeout: int = 1200) -> nbformat.NotebookNode:
    """Run the notebook at ``path`` top to bottom in a fresh kernel; its figures go to ``figures``."""
    from nbclient import NotebookClient

    env = dict(os.environ, VIDCOMPRESS_FIGURES=str(figures.resolve()), VIDCOMPRESS_NOTEBOOK_QUICK="1" if quick else "0")
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute(env=env)
    return notebook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--execute", action="store_true", help="run compare_methods.ipynb after writing it")
    parser.add_argument("--quick", action="store_true", help="a small run: fewer methods, retentions and videos")
    parser.add_argument("--figures", type=Path, default=FIGURES, help="where the executed notebook writes its PNGs")
    args = parser.parse_args(argv)
    for path in write_notebooks():
        print(f"wrote {path.relative_to(ROOT)}")
    if args.execute:
        start = time.perf_counter()
        execute(NOTEBOOKS / "compare_methods.ipynb", args.figures, args.quick)
        figures = sorted(args.figures.glob("*.png"))
        print(f"executed compare_methods.ipynb in {time.perf_counter() - start:.0f} s; {len(figures)} figures in "
              f"{args.figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
