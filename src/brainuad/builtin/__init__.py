"""Data package: one folder per shipped model (config.json, model.safetensors, calibration.json, MODEL_CARD.md).

See :mod:`brainuad.io.shipped` and ``brainuad models``.
"""
