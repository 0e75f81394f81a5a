"""Stage report: what a person looks at — figures (overlays, curves) and the HTML reports.

- :mod:`~brainuad.report.figures`: matplotlib figures, headless;
- :mod:`~brainuad.report.html`: self-contained HTML reports and their tables.

May use: io and the layers below it. Train, infer and evaluate draw with it.
"""
