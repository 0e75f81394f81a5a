"""Stage train: healthy case folders → a self-describing run folder.

- :mod:`~brainuad.train.loop`: ``train()``, a run stage by stage; :mod:`~brainuad.train.run` its set-up;
  :mod:`~brainuad.train.epochs` the gradient loop (start, epoch, end of epoch);
- :mod:`~brainuad.train.step`: one optimiser step (bf16, channels-last, compile on GPU);
- :mod:`~brainuad.train.batches`: batch plans and the prefetching gatherer;
- :mod:`~brainuad.train.checkpoints`, :mod:`~brainuad.train.runfolder`: weights, config, resume, log and summary;
- :mod:`~brainuad.train.device`: devices and DDP; :mod:`~brainuad.train.guard`: the learned-nothing check.

May use: report, data, preprocess, io, config, models and the base modules; never infer or evaluate.
"""
