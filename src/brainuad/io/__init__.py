"""Stage io: reading and writing what brainuad touches on disk.

- :mod:`~brainuad.io.volumes`: ``Volume`` (array, affine, header, path), NIfTI loaded with validation and saved in the
  input's orientation, JSON, safe names;
- :mod:`~brainuad.io.files`: atomic files and folders, folder ownership (brainuad never replaces a folder it did not
  write);
- :mod:`~brainuad.io.provenance`: library versions, git hash, file hashes;
- :mod:`~brainuad.io.shipped`: where the models shipped with the package (``builtin:NAME``) lie.

May use: :mod:`brainuad.config`, :mod:`brainuad.models` and the base modules (errors, schema, seeds); no other stage.
"""
