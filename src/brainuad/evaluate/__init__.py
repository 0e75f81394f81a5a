"""Stage evaluate: models measured on reference cases, and thresholds chosen from them.

- :mod:`~brainuad.evaluate.labelled`: labelled cases on the crop grid, thresholds applied or tuned;
- :mod:`~brainuad.evaluate.metrics`, :mod:`~brainuad.evaluate.scores`: voxel, slice, scan and lesion metrics;
- :mod:`~brainuad.evaluate.froc`: lesion sensitivity against false positives per scan, operating points;
- :mod:`~brainuad.evaluate.evaluation`: the ``evaluate`` verb's tables, curves and intervals;
- :mod:`~brainuad.evaluate.calibrate`: healthy scans or labelled tuning cases → ``calibration.json`` (it measures, so
  it lives here, as nnU-Net chooses its post-processing from an evaluation);
- :mod:`~brainuad.evaluate.ablation`: the paper's ablations, chains of train, calibrate and evaluate.

May use: every stage below it (infer, train, report, data, preprocess, io).
"""
