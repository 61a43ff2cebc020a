"""Build hook: the wheel carries the Hydra configs.

The repository keeps one copy of the configs in the top-level ``conf/`` (the design card's
layout). A built wheel copies that tree into the package as ``memvir_pl/conf/``, where
``memvir_pl.config`` finds it when the package runs outside the source tree. Editable installs
read ``conf/`` in place, so nothing is copied for them. Metadata lives in setup.cfg.
"""

from pathlib import Path
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

CONFIG_SOURCE = Path(__file__).resolve().parent / "conf"


class BuildPyWithConfigs(build_py):
    """``build_py`` that also copies ``conf/**/*.yaml`` into ``<build>/memvir_pl/conf``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "memvir_pl" / "conf"
        if target.exists():
            shutil.rmtree(target)
        for source in sorted(CONFIG_SOURCE.rglob("*.yaml")):
            destination = target / source.relative_to(CONFIG_SOURCE)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, destination)


setup(cmdclass={"build_py": BuildPyWithConfigs})
