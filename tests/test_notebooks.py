"""The notebooks: committed files match their generator, and compare_methods.ipynb runs top to bottom (small run)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def load_generator():
    spec = importlib.util.spec_from_file_location("make_notebooks", ROOT / "scripts" / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_notebooks_match_the_generator_and_carry_no_outputs():
    generator = load_generator()
    for name in ("compare_methods.ipynb", "real_model.ipynb"):
        path = ROOT / "notebooks" / name
        assert path.read_text() == generator.notebook_text(name), f"rerun scripts/make_notebooks.py ({name})"
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


def test_compare_methods_notebook_executes_and_writes_figures(tmp_path):
    import matplotlib.image

    generator = load_generator()
    executed = generator.execute(ROOT / "notebooks" / "compare_methods.ipynb", tmp_path, quick=True)
    errors = [out for cell in executed.cells if cell.cell_type == "code" for out in cell.outputs
              if out.output_type == "error"]
    assert not errors
    expected = {"accuracy_vs_retention.png", "ttft_vs_retention.png", "frame_budgets.png",
                "overlay_uniform.png", "overlay_holitom.png"}
    assert {path.name for path in tmp_path.glob("*.png")} == expected
    for name in expected:
        image = matplotlib.image.imread(tmp_path / name)
        assert image.shape[0] > 200 and image.shape[1] > 300, name
        rgb = image[..., :3]
        assert float(rgb.std()) > 0.05, f"{name} is nearly blank"
        assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 20, f"{name} has almost no colours"
    printed = "".join(out.get("text", "") for cell in executed.cells if cell.cell_type == "code"
                      for out in cell.outputs)
    assert "skipped none at 0.25" in printed
