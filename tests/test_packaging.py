"""A built wheel runs from any directory: the configs travel inside the package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hydra_helpers import EXPERIMENTS, QUIET, REPO

# what a source distribution holds (MANIFEST.in + the package): the wheel is built from these alone
SOURCE_FILES = ("setup.py", "setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md", "LICENSE", "src", "conf")
TINY = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
        "+trainer.limit_test_batches=1", "data.batch_size=32", "data.eval_batch_size=256"]


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> Path:
    """The package built as a wheel from a copy of its sources and installed into a bare folder."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in SOURCE_FILES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copyfile(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(work / "dist"), str(source)], check=True, capture_output=True, text=True)
    (wheel,) = (work / "dist").glob("memvir_pl-*.whl")
    target = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, text=True)
    return target


def run_installed(target: Path, cwd: Path, args: list[str]) -> subprocess.CompletedProcess:
    """``python args`` in ``cwd`` with the installed wheel first on the path (not the checkout)."""
    cwd.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMVIR_")}
    env["PYTHONPATH"] = str(target)
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_the_wheel_carries_every_config(installed_wheel):
    packaged = installed_wheel / "memvir_pl" / "conf"
    shipped = sorted(str(p.relative_to(packaged)) for p in packaged.rglob("*.yaml"))
    assert shipped == sorted(str(p.relative_to(REPO / "conf")) for p in (REPO / "conf").rglob("*.yaml"))


@pytest.mark.slow
def test_the_installed_wheel_composes_every_experiment_from_another_directory(installed_wheel, tmp_path):
    script = (
        "import json, memvir_pl, memvir_pl.config as c\n"
        f"cfgs = {{name: c.compose_config([f'+experiment={{name}}'], 'out') for name in {EXPERIMENTS!r}}}\n"
        "print(json.dumps({'package': memvir_pl.__file__, 'config_dir': str(c.CONFIG_DIR),\n"
        "                  'tasks': {n: cfg.task_name for n, cfg in cfgs.items()}}))\n"
    )
    report = json.loads(run_installed(installed_wheel, tmp_path, ["-c", script]).stdout.strip().splitlines()[-1])
    assert Path(report["package"]).is_relative_to(installed_wheel)
    assert Path(report["config_dir"]) == installed_wheel / "memvir_pl" / "conf"
    assert report["tasks"] == {name: name for name in EXPERIMENTS}
    printed = run_installed(installed_wheel, tmp_path, ["-m", "memvir_pl.train", "+experiment=cars", "--cfg", "job"])
    assert "task_name: cars" in printed.stdout and "num_steps: 45" in printed.stdout


@pytest.mark.slow
def test_the_installed_wheel_trains_evaluates_embeds_and_searches(installed_wheel, tmp_path):
    run_installed(installed_wheel, tmp_path, ["-m", "memvir_pl.train", "+trainer.fast_dev_run=true", *QUIET])
    # outside a checkout everything goes under the current directory: logs/ and the glyph cache .cache/
    assert len(list((tmp_path / "logs" / "train" / "runs").iterdir())) == 1 and (tmp_path / ".cache").is_dir()
    run_installed(installed_wheel, tmp_path, ["-m", "memvir_pl.train", *TINY, "hydra.run.dir=run", *QUIET])
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]["test/recall@1"] > 0
    run_installed(installed_wheel, tmp_path, ["-m", "memvir_pl.eval", f"ckpt_path={checkpoint}", "hydra.run.dir=eval",
                                              "+trainer.limit_test_batches=1"])
    assert "test/map@r" in json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]
    run_installed(installed_wheel, tmp_path, ["-m", "memvir_pl.embed", f"ckpt_path={checkpoint}", "split=val",
                                              "output_dir=embedded"])
    assert (tmp_path / "embedded" / "val_embeddings.npy").is_file()
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (32, 32), (80 * i, 0, 0)).save(gallery / f"{i}.png")
    run_installed(installed_wheel, tmp_path, ["-m", "memvir_pl.search", f"ckpt_path={checkpoint}",
                                              f"gallery={gallery}", f"query={gallery / '0.png'}", "k=2",
                                              "output=found.json", "cache_dir=null"])
    assert (tmp_path / "found.json").is_file()
