"""brainuad: unsupervised anomaly detection in brain MRI, after Luo et al.

Learns healthy anatomy from healthy scans only and flags what does not fit. A research tool, not a medical device.
"""

__version__ = "0.1.0"
