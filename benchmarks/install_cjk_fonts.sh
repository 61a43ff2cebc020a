#!/usr/bin/env bash
# Fonts for the glyphs (b) benchmark (conf/data/glyphs_cjk.yaml): Debian bookworm CJK font
# packages of varied styles, every one checked with `apt-cache policy` (bookworm, 2026-11):
#   Ming/Song/Mincho: arphic-uming, arphic-bsmi00lp, arphic-gbsn00lp, cwtex-ming, cns11643-sung,
#                     ipafont-mincho, ipaexfont-mincho, ipamj-mincho, hanazono, dejima-mincho,
#                     unfonts-core (Batang), baekmuk (Batang)
#   Kai:              arphic-ukai, arphic-bkai00mp, arphic-gkai00mp, cwtex-kai, cns11643-kai,
#                     lxgw-wenkai
#   Fangsong:         cwtex-fs
#   Gothic/Hei:       noto-cjk (Sans, Serif), wqy-zenhei, wqy-microhei, cwtex-heib, ipafont-gothic,
#                     ipaexfont-gothic, vlgothic, komatuna, mplus, droid-fallback
#   Rounded:          cwtex-yen, motoya-l-maruberi
#   Brush:            kouzan-mouhitsu, aoyagi-kouzan-t, aoyagi-soseki
#   Handwritten:      klee, seto, yozvox-yozfont, kiloji, motoya-l-cedar
#   Bitmap-like:      misaki (8 px design)
# Left out on purpose: fonts-takao-* (renamed IPA fonts: identical glyphs), fonts-migmix
# (IPA + M+ composites), fonts-noto-cjk-extra (only more weights of Noto CJK), and
# fonts-horai-umefont: FreeType fails on 3 of its faces (ume-pgs4, ume-pgs5, ume-tgs5: "OSError:
# invalid opcode" for 2,643 GB 2312 characters) and the glyph builder skips fonts only when they
# fail to open, not when they fail to render, so the build stops.
# Usage: sudo benchmarks/install_cjk_fonts.sh   (needs network; ~600 MB on disk)
set -euo pipefail

PACKAGES=(
  fonts-arphic-ukai fonts-arphic-uming fonts-arphic-bkai00mp fonts-arphic-bsmi00lp
  fonts-arphic-gbsn00lp fonts-arphic-gkai00mp fonts-noto-cjk fonts-wqy-zenhei fonts-wqy-microhei
  fonts-cwtex-fs fonts-cwtex-heib fonts-cwtex-kai fonts-cwtex-ming fonts-cwtex-yen
  fonts-lxgw-wenkai fonts-cns11643-kai fonts-cns11643-sung fonts-ipafont-gothic
  fonts-ipafont-mincho fonts-ipaexfont-gothic fonts-ipaexfont-mincho fonts-vlgothic
  fonts-komatuna fonts-misaki fonts-hanazono fonts-klee fonts-kouzan-mouhitsu
  fonts-ipamj-mincho fonts-motoya-l-cedar fonts-motoya-l-maruberi fonts-aoyagi-kouzan-t
  fonts-aoyagi-soseki fonts-yozvox-yozfont fonts-seto fonts-mplus fonts-dejima-mincho
  fonts-kiloji fonts-baekmuk fonts-unfonts-core fonts-droid-fallback
)

apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${PACKAGES[@]}"
echo "installed ${#PACKAGES[@]} font packages; build the data set with:"
echo "  python benchmarks/quality.py --data-report glyphs_cjk"
