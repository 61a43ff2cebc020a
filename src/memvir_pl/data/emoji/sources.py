"""The npm packages of the ``emoji`` data set: which designs they hold, their licences, how to
fetch them (``npm pack`` into one folder) and how to read them (straight from the tarballs).

Three layouts are read (``Source.layout``):

- ``datasource`` (``emoji-datasource-*``): ``img/<set>/64/<hex>.png`` named by the ``image`` of
  each entry of ``emoji.json`` (and of its ``skin_variations``), present when ``has_img_<set>``.
- ``openmoji``: ``color/svg/<HEX>.svg`` and ``black/svg/<HEX>.svg``, named by code point.
- ``iconify`` (``@iconify-json/*``): SVG bodies in ``icons.json``; ``chars.json`` maps code
  points to icon names where the set has it, otherwise the icons are known only by name.

Versions are pinned: the data set is a function of these exact tarballs.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: The command that fetches every package into ``data/emoji/packages`` (see :func:`fetch`).
FETCH_COMMAND = "python -m memvir_pl.data.emoji fetch --root data/emoji/packages"


@dataclass(frozen=True)
class Package:
    """One npm package at a pinned version."""

    name: str
    version: str

    @property
    def tarball(self) -> str:
        """The file ``npm pack`` writes: ``@scope/name`` becomes ``scope-name-<version>.tgz``."""
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class Source:
    """One design set (a column of the data set) and where its images are.

    Attributes:
        design: short name of the design set.
        package: the npm package that holds it.
        layout: ``datasource``, ``openmoji`` or ``iconify`` (see the module docstring).
        variant: the ``datasource`` image set (``apple``...) or the ``openmoji`` folder
            (``color``/``black``); empty for iconify.
        image_licence: SPDX id of the images' licence, or ``proprietary``/``unclear``.
        licence_note: where ``image_licence`` is stated when it is not the package.json
            ``license`` (emoji-datasource's package.json licence covers its code and data only).
        attribution: the images' authors when the package's author is not (emoji-datasource,
            openmoji); empty = the package's (iconify ``info.json``) author.
    """

    design: str
    package: Package
    layout: str
    variant: str = ""
    image_licence: str = ""
    licence_note: str = ""
    attribution: str = ""


DATASOURCE_NOTE = "emoji-datasource README: MIT covers the code and data, not the images"
OPENMOJI = "OpenMoji, the open-source emoji and icon project https://openmoji.org"
SOURCES: tuple[Source, ...] = (
    Source("apple", Package("emoji-datasource-apple", "16.0.0"), "datasource", "apple",
           "proprietary", DATASOURCE_NOTE + " (Apple images: copyright Apple, not licensed)"),
    Source("google", Package("emoji-datasource-google", "16.0.0"), "datasource", "google",
           "Apache-2.0", DATASOURCE_NOTE + " (Noto images: Apache 2.0)",
           "Google, Noto Emoji https://github.com/googlefonts/noto-emoji"),
    Source("twitter", Package("emoji-datasource-twitter", "16.0.0"), "datasource", "twitter",
           "CC-BY-4.0", DATASOURCE_NOTE + " (Twemoji graphics: CC BY 4.0)",
           "Twitter, Inc and other contributors, Twemoji https://github.com/jdecked/twemoji"),
    Source("facebook", Package("emoji-datasource-facebook", "16.0.0"), "datasource", "facebook",
           "unclear", DATASOURCE_NOTE + " (Facebook images: no clear licence)"),
    Source("openmoji", Package("openmoji", "17.0.0"), "openmoji", "color",
           attribution=OPENMOJI),
    Source("openmoji-black", Package("openmoji", "17.0.0"), "openmoji", "black",
           attribution=OPENMOJI),
    Source("noto-v1", Package("@iconify-json/noto-v1", "1.2.5"), "iconify"),
    Source("fluent-emoji", Package("@iconify-json/fluent-emoji", "1.2.7"), "iconify"),
    Source("fluent-emoji-flat", Package("@iconify-json/fluent-emoji-flat", "1.2.6"), "iconify"),
    Source("fluent-emoji-high-contrast",
           Package("@iconify-json/fluent-emoji-high-contrast", "1.2.6"), "iconify"),
    Source("emojione", Package("@iconify-json/emojione", "1.2.3"), "iconify"),
    Source("emojione-v1", Package("@iconify-json/emojione-v1", "1.2.3"), "iconify"),
    Source("fxemoji", Package("@iconify-json/fxemoji", "1.2.2"), "iconify"),
    Source("streamline-emojis", Package("@iconify-json/streamline-emojis", "1.2.4"), "iconify"),
)
#: CLDR names and the emoji list (classes are its emoji), used to map icon names to emoji.
NAME_DATA = Package("emojibase-data", "17.0.0")
#: Image licences whose images may be shown (the contact sheet): open licences only.
OPEN_LICENCES = frozenset({"MIT", "Apache-2.0", "CC-BY-4.0", "CC-BY-SA-4.0", "OFL-1.1", "CC0-1.0"})


def packages(sources: Sequence[Source] = SOURCES) -> list[Package]:
    """The distinct packages of ``sources`` and the name data, in order."""
    return list(dict.fromkeys([*(s.package for s in sources), NAME_DATA]))


def require_packages(root: Path, sources: Sequence[Source] = SOURCES) -> None:
    """Raise FileNotFoundError naming every missing tarball and the command that fetches them."""
    missing = [p.tarball for p in packages(sources) if not (root / p.tarball).is_file()]
    if missing:
        raise FileNotFoundError(
            f"emoji: missing {len(missing)} package tarball(s) under {root}: {missing}. "
            f"Fetch them (needs the npm registry, ~370 MB) with `{FETCH_COMMAND}` from the "
            "repository root, or set data.root to the folder that holds them."
        )


def fetch(root: Path, sources: Sequence[Source] = SOURCES, npm: str = "npm") -> list[Path]:
    """``npm pack`` every missing package into ``root``; returns the tarball paths."""
    root.mkdir(parents=True, exist_ok=True)
    todo = [p for p in packages(sources) if not (root / p.tarball).is_file()]
    if todo:
        command = [npm, "pack", "--loglevel=warn", "--pack-destination", str(root), *(p.spec for p in todo)]
        print("running:", " ".join(shlex.quote(c) for c in command), flush=True)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    require_packages(root, sources)
    return [root / p.tarball for p in packages(sources)]


def read_members(tarball: Path, wanted: Callable[[str], bool]) -> dict[str, bytes]:
    """Contents of the regular files of ``tarball`` whose path (without the leading
    ``package/``) satisfies ``wanted``, in one streaming pass."""
    out = {}
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar:
            name = member.name.removeprefix("package/")
            if member.isfile() and wanted(name):
                out[name] = tar.extractfile(member).read()
    return out


def read_json(tarball: Path, name: str) -> object:
    """One JSON file of a package (``name`` relative to the package root); reading stops there."""
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar:
            if member.isfile() and member.name.removeprefix("package/") == name:
                return json.loads(tar.extractfile(member).read())
    raise FileNotFoundError(f"{tarball} has no {name}; is it the right package and version?")
