"""Side-by-side results of the protocol scripts (``scripts/<method>/*.sh``).

    python -m comparison.results OUTPUT_DIR [--out DIR]    tables (text, CSV, Markdown) and PNG plots
    python -m comparison.logs RUN_FOLDER                   one run's accuracy (exit 1: no result yet)

Modules: ``logs`` reads one run folder, ``layout`` walks an output tree into
runs, ``summary`` averages seeds and builds the tables, ``render`` writes
text / CSV / Markdown, ``plots`` draws the PNGs, ``results`` is the command
line. Only the standard library is needed, and matplotlib for the plots.
"""
