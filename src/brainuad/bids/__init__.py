"""BIDS datasets in, BIDS derivatives out: brainuad as a BIDS App (``brainuad bids BIDS_DIR OUTPUT_DIR LEVEL``).

- :mod:`~brainuad.bids.layout`: the dataset read with a BIDS library (checks, participant/session/suffix selection,
  the filter file, participants.tsv filters, one output name per scan);
- :mod:`~brainuad.bids.participant`: detection on each selected scan, written as BIDS derivatives (maps and masks in
  the scan's own space and in MNI crop space, JSON sidecars, reports, ``dataset_description.json``);
- :mod:`~brainuad.bids.group`: the group TSV (one row per scan) and the HTML triage page.

It may use the stages below it: infer (detection), report (figures, HTML), preprocess (the preprocessing of a BIDS
training cohort), io, config and errors. It never writes inside the BIDS dataset except under ``derivatives/``.
"""
