"""Plots of MemVir training and retrieval: the curriculum, the memory's embeddings, retrieval grids.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot, so nothing
needs a display: ``fig.savefig("x.png")`` renders with Agg, and a notebook shows the figure
when it is a cell's value (after ``%matplotlib inline``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

#: Frame colours of retrieval results: same class as the query, another class, unknown.
CORRECT_COLOR = "#2ca02c"
WRONG_COLOR = "#d62728"
NEUTRAL_COLOR = "#7f7f7f"
QUERY_COLOR = "#1f77b4"
PROJECTIONS = ("pca", "tsne")


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` x ``height`` inches on an Agg canvas (no display, no pyplot)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` as an image (format from the suffix, e.g. ``.png``); creates the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def plot_curriculum(
    steps: Sequence[int],
    active_classes: Sequence[int],
    num_classes: int,
    step_gap: int,
    warmup_steps: int | None = None,
) -> Figure:
    """Active classes (n+1)·C of each training step: MemVir's curriculum.

    Args:
        steps: (T,) global step of each training step.
        active_classes: (T,) classes the loss saw in that step, (n+1)·C.
        num_classes: C, the real training classes (the level before MemVir).
        step_gap: M (a new block is expected every M+1 steps; shown in the title).
        warmup_steps: steps of the warm-up epochs, marked with a vertical line.
    """
    fig = new_figure(6.4, 3.6)
    ax = fig.add_subplot()
    ax.step(steps, active_classes, where="post", color="#1f77b4", lw=2)
    ax.axhline(num_classes, color=NEUTRAL_COLOR, ls=":", lw=1, label=f"C = {num_classes} real classes")
    if warmup_steps:
        ax.axvline(warmup_steps, color=WRONG_COLOR, ls="--", lw=1, label="end of warm-up")
    ax.set_xlabel("training step")
    ax.set_ylabel("active classes (n+1)·C")
    ax.set_title(f"MemVir curriculum: C more classes every M+1 = {step_gap + 1} steps", fontsize=10)
    ax.set_ylim(0, max(active_classes, default=num_classes) * 1.08)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return fig


def project_2d(points: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(N, D) points -> (N, 2): PCA (top two principal axes) or t-SNE (scikit-learn)."""
    if method not in PROJECTIONS:
        raise ValueError(f"projection method must be one of {PROJECTIONS}, got {method!r}.")
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or len(points) < 3:
        raise ValueError(f"project_2d needs (N >= 3, D) points, got shape {points.shape}.")
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = min(30.0, (len(points) - 1) / 3)
        return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)
    centred = points - points.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    return centred @ axes[:2].T


def plot_memory_projection(
    groups: Sequence[np.ndarray | torch.Tensor],
    offsets: Sequence[int],
    method: str = "pca",
    proxies: np.ndarray | torch.Tensor | None = None,
) -> Figure:
    """2-D projection of the current embeddings and the memory's, coloured by step offset.

    As the paper's Figure 3: the memory's embeddings (from older models) sit apart from the
    current ones and act as extra classes.

    Args:
        groups: embeddings (B_j, D) per step: the current step first, then the memory items.
        offsets: step offset of each group: 0, -(M+1), -2(M+1), ...
        method: ``"pca"`` or ``"tsne"``; one projection is fitted to all points together.
        proxies: optional (P, D) current proxies, drawn as black crosses.
    """
    if len(groups) != len(offsets) or not groups:
        raise ValueError(f"need one offset per group, got {len(groups)} groups and {len(offsets)} offsets.")
    arrays = [torch.as_tensor(g).float().cpu().numpy() for g in groups]
    extra = [] if proxies is None else [torch.as_tensor(proxies).float().cpu().numpy()]
    projected = project_2d(np.concatenate(arrays + extra), method)
    fig = new_figure(6.0, 5.2)
    ax = fig.add_subplot()
    colours = _step_colours(len(arrays))
    start = 0
    for array, offset, colour in zip(arrays, offsets, colours, strict=True):
        xy = projected[start : start + len(array)]
        start += len(array)
        label = "current step t" if offset == 0 else f"memory t{offset:+d}"
        ax.scatter(xy[:, 0], xy[:, 1], s=14, color=colour, label=label, alpha=0.85, lw=0)
    if proxies is not None:
        xy = projected[start:]
        ax.scatter(xy[:, 0], xy[:, 1], s=10, marker="x", color="black", lw=0.6, alpha=0.4,
                   label="current proxies")
    ax.set_title(f"current and memory embeddings ({method.upper() if method == 'pca' else 't-SNE'})")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="best", fontsize=8, markerscale=1.5)
    return fig


def _step_colours(count: int) -> list[tuple[float, float, float, float]]:
    """The current step in a strong colour, older steps fading along a sequential colormap."""
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.9 * i / max(count - 1, 1)) for i in range(count)]


def plot_retrieval_grid(
    queries: Sequence[np.ndarray],
    results: Sequence[Sequence[np.ndarray]],
    correct: np.ndarray | None = None,
    scores: np.ndarray | None = None,
    query_titles: Sequence[str] | None = None,
) -> Figure:
    """One row per query: the query image, then its top-k results framed by correctness.

    Args:
        queries: Q images, each (H, W) grey or (H, W, 3) RGB, uint8 or float in [0, 1].
        results: Q lists of k images (nearest first).
        correct: (Q, k) bool, True framed green, False red; ``None`` frames them grey.
        scores: (Q, k) similarities written under the results.
        query_titles: Q captions of the queries.
    """
    rows = len(queries)
    if rows == 0 or len(results) != rows:
        raise ValueError(f"need one result list per query, got {rows} queries and {len(results)} lists.")
    k = max(len(r) for r in results)
    fig = new_figure(1.25 * (k + 1) + 0.3, 1.4 * rows)
    axes = np.asarray(fig.subplots(rows, k + 1, squeeze=False))
    for i in range(rows):
        _show(axes[i, 0], queries[i], QUERY_COLOR, query_titles[i] if query_titles else "query")
        for j in range(k):
            if j >= len(results[i]):
                axes[i, j + 1].set_axis_off()
                continue
            colour = NEUTRAL_COLOR if correct is None else (CORRECT_COLOR if correct[i][j] else WRONG_COLOR)
            title = f"#{j + 1}" if scores is None else f"#{j + 1}  {float(scores[i][j]):.3f}"
            _show(axes[i, j + 1], results[i][j], colour, title)
    return fig


def _show(ax, image: np.ndarray, colour: str, title: str) -> None:
    image = np.asarray(image)
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255 if image.dtype == np.uint8 else 1)
    height, width = image.shape[:2]
    ax.add_patch(Rectangle((-0.5, -0.5), width, height, fill=False, edgecolor=colour, lw=4))
    ax.set_title(title, fontsize=7, color="black" if colour == NEUTRAL_COLOR else colour)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def plot_validation_curves(epochs: Sequence[dict[str, float]], keys: Sequence[str] | None = None) -> Figure:
    """Validation metrics over the epochs: one line per metric.

    Args:
        epochs: one mapping per validated epoch, with ``"epoch"`` (1-based) and metric values in
            [0, 1] (e.g. ``{"epoch": 5, "val/recall@1": 0.61, "val/map@r": 0.22}``).
        keys: the metrics to draw; ``None`` = every key but ``"epoch"`` that some epoch has.
    """
    if not epochs:
        raise ValueError("plot_validation_curves needs at least one validated epoch, got none.")
    keys = list(keys) if keys is not None else sorted({k for row in epochs for k in row if k != "epoch"})
    fig = new_figure(6.4, 3.6)
    ax = fig.add_subplot()
    for key in keys:
        points = [(row["epoch"], 100 * row[key]) for row in epochs if key in row]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o" if len(points) < 30 else None, ms=3, label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("%")
    ax.set_title("validation metrics", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def figure_to_array(fig: Figure, dpi: int = 100) -> np.ndarray:
    """The rendered ``fig`` as an (H, W, 3) uint8 RGB array."""
    fig.set_dpi(dpi)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
