"""The notebooks run headless with a small step budget; the plot helpers they use draw what they are given."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from PIL import Image

from memvir_pl.viz import (
    CORRECT_COLOR,
    WRONG_COLOR,
    plot_curriculum,
    plot_memory_projection,
    plot_retrieval_grid,
    project_2d,
    save_figure,
)

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(name: str, tmp_path: Path):
    """Run notebooks/<name>.ipynb with the tests' budget (notebooks/make_figures.py's runner)."""
    spec = importlib.util.spec_from_file_location("make_figures", NOTEBOOKS / "make_figures.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    env = {"MEMVIR_NOTEBOOK_FAST": "1", "MEMVIR_FIGURES_DIR": str(tmp_path / "figures"),
           "MEMVIR_CACHE": str(tmp_path / ".cache"), "OMP_NUM_THREADS": "1"}
    return runner.execute_notebook(NOTEBOOKS / f"{name}.ipynb", env, timeout=600)


def outputs(notebook, kind: str) -> list[str]:
    """The text (stream and text/plain) or the image/png outputs of every code cell, in order."""
    found = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if kind == "text" and output.output_type == "stream":
                found.append(output.text)
            elif kind in output.get("data", {}):
                found.append(output.data[kind])
    return found


@pytest.mark.slow
def test_quickstart_runs_and_saves_its_three_plots(tmp_path):
    notebook = execute("quickstart", tmp_path)
    text = "\n".join(outputs(notebook, "text") + outputs(notebook, "text/plain"))
    # FAST budget: 2 epochs x 8 steps, warm-up 1 epoch, N=3, M=1: the curriculum tops out at 4C
    steps, classes, top = map(int, re.search(r"(\d+) steps: (\d+) classes -> (\d+) = \(3 \+ 1\)", text).groups())
    assert steps == 16 and top == 4 * classes and classes > 100
    assert re.search(r"points per step: \{0: 64, -2: 64, -4: 64, -6: 64\}", text)
    assert re.search(r"baseline .*\n.*MemVir", text) and "map@r" in text
    assert re.search(r"top-1 correct for \d of 8 queries", text)
    assert len(outputs(notebook, "image/png")) == 3
    expected_px = {"curriculum": (768, 432), "memory_projection": (720, 624), "retrieval_grid": (936, 1344)}
    for name, size in expected_px.items():
        with Image.open(tmp_path / "figures" / f"{name}.png") as image:
            assert image.size == size
            assert np.asarray(image.convert("L")).std() > 10  # not blank


@pytest.mark.slow
def test_custom_module_notebook_trains_with_a_pml_loss(tmp_path):
    notebook = execute("custom_module", tmp_path)
    text = "\n".join(outputs(notebook, "text"))
    match = re.search(r"PMLAdapter ([\d.]+) == ProxyAnchorLoss ([\d.]+)", text)
    assert match and match.group(1) == match.group(2)
    # FAST budget: 2 epochs x 6 steps, warm-up 1: 6 items, the last step used min(2, 5 // 2) = 2 blocks
    match = re.search(r"6 items stored; the last step saw 2 virtual blocks: (\d+) classes", text)
    assert match and int(match.group(1)) % 3 == 0
    assert "'val/map@r'" in text


def test_pca_projection_matches_the_top_principal_axes():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(200, 5)) * np.array([5.0, 2.0, 0.5, 0.2, 0.1])
    projected = project_2d(points, "pca")
    centred = points - points.mean(axis=0)
    covariance = centred.T @ centred / len(points)
    _, vectors = np.linalg.eigh(covariance)
    reference = centred @ vectors[:, ::-1][:, :2]
    np.testing.assert_allclose(np.abs(projected), np.abs(reference), atol=1e-8)
    with pytest.raises(ValueError, match="must be one of"):
        project_2d(points, "umap")


def test_retrieval_grid_frames_results_by_correctness(tmp_path):
    images = [np.full((8, 8), v, np.uint8) for v in (0, 80, 160, 240)]
    correct = np.array([[True, False, True], [False, False, True]])
    figure = plot_retrieval_grid(images[:2], [images[1:], images[:3]], correct=correct,
                                 scores=np.array([[0.9, 0.8, 0.7], [0.6, 0.5, 0.4]]))
    axes = np.asarray(figure.axes).reshape(2, 4)
    for i in range(2):
        for j in range(3):
            frame = axes[i, j + 1].patches[0]
            assert frame.get_edgecolor() == to_rgba(CORRECT_COLOR if correct[i, j] else WRONG_COLOR)
    assert axes[1, 2].get_title() == "#2  0.500"
    with Image.open(save_figure(figure, tmp_path / "grid.png")) as png:
        assert png.size == (round(120 * (1.25 * 4 + 0.3)), round(120 * 1.4 * 2))


def test_curriculum_and_projection_plots_draw_the_given_data():
    figure = plot_curriculum(range(6), [10, 10, 20, 20, 30, 30], num_classes=10, step_gap=1, warmup_steps=2)
    line = figure.axes[0].lines[0]
    assert list(line.get_ydata()) == [10, 10, 20, 20, 30, 30]
    groups = [np.eye(4)[:3], np.eye(4)[1:] * 2]
    figure = plot_memory_projection(groups, [0, -11])
    labels = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert labels == ["current step t", "memory t-11"]
    assert [len(c.get_offsets()) for c in figure.axes[0].collections] == [3, 3]
    with pytest.raises(ValueError, match="one offset per group"):
        plot_memory_projection(groups, [0])
