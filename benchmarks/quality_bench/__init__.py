"""The retrieval-quality benchmark behind ``benchmarks/quality.py`` (the CLI), in small modules:

- ``regimes``: the settings as data (regimes, losses, ablations, budgets);
- ``grid``: the runs of a regime (RunSpec, in the order run);
- ``runner``: running the grid, cached and resumable, shared by workers;
- ``zero_shot``: the untrained floor (pooled ImageNet features);
- ``stats``: means, Welch standard errors, comparisons, the protocol audit;
- ``report``: tables, plots and the summary figure;
- ``data_report``: the glyph data report;
- ``emoji_report``: the emoji data report and contact sheet.
"""
