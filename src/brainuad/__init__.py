"""brainuad: unsupervised anomaly detection in brain MRI, after Luo et al.

Learns healthy anatomy from healthy scans only and flags what does not fit. A research tool, not a medical device.

In a notebook::

    import brainuad
    findings = brainuad.detect("scan.nii.gz", model="builtin:t2")
    findings            # a summary table (Jupyter)
    findings.view()     # an interactive viewer: the anomaly map over the scan
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Findings", "__version__", "detect"]


def __getattr__(name: str) -> Any:
    # Lazy: `import brainuad` stays light (no torch) until the API is used.
    if name in ("detect", "Findings"):
        import importlib

        return getattr(importlib.import_module("brainuad.api"), name)
    raise AttributeError(f"module 'brainuad' has no attribute {name!r}")
