"""Stage data: the scans a run learns from or is measured on.

- :mod:`~brainuad.data.datasets`: healthy folders (IXI names), BraTS-, MS- and slice-CSV-labelled layouts, the
  memory-mapped volume cache;
- :mod:`~brainuad.data.download`: fetching IXI for users;
- :mod:`~brainuad.data.synthetic`, :mod:`~brainuad.data.mrsim`: simulated heads (BrainWeb anatomies) for the demo;
- :mod:`~brainuad.data.augmentation`: the batched training augmentation.

May use: preprocess, io and the layers below them; never train, infer or evaluate.
"""
