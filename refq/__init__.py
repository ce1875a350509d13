"""refq: a minimal, readable NumPy/Numba reference for SARDFQ, ASER and a joint CNN-CTC text spotter."""

__version__ = "0.1.0"
