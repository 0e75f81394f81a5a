"""Stage infer: a trained model and a scan → anomaly map, segmentation, scores and findings.

- :mod:`~brainuad.infer.inference`: model + case → reconstruction, anomaly map, slice and scan scores;
- :mod:`~brainuad.infer.postprocessing`: median filter, eroded mask, threshold, connected components;
- :mod:`~brainuad.infer.calibration`: the typed ``calibration.json`` (one reader, one writer);
- :mod:`~brainuad.infer.trained`: ``TrainedModel`` (run folder or ``builtin:NAME``), the one place a threshold is
  decided;
- :mod:`~brainuad.infer.detect`: raw scans → findings in native and MNI space, with a report.

May use: train (weights, devices, the guard's verdict) and every stage below it; never evaluate.
"""
