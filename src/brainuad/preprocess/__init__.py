"""Stage preprocess: a raw scan in its own space → a case folder on the MNI crop grid, and the way back.

- :mod:`~brainuad.preprocess.pipeline`: skull strip → rigid registration to MNI → crop → scale, the batch verb;
- :mod:`~brainuad.preprocess.skullstrip`, :mod:`~brainuad.preprocess.registration`,
  :mod:`~brainuad.preprocess.templates` (the MNI grids and templates), :mod:`~brainuad.preprocess.qc`;
- :mod:`~brainuad.preprocess.cases`: the case folder (``PreprocessedCase``, ``save_case``, ``load_case``).

May use: io and the layers below it; never data, train, infer or evaluate.
"""
