"""Parla: a self-hosted voice-cloning speech server."""

import os

# NumPy's BLAS (OpenBLAS) starts a thread per core for every matrix product and keeps them
# spinning between products. Parla's are small (a sentence's envelopes: hundreds of frames by 513
# bins) and run beside the speech model's own threads, so the spinning only burns the cores the
# model needs: measured on two cores, the voice conversion took twice the CPU time with it. Set
# here, before NumPy is first imported; a value the operator set is kept. (OpenBLAS's alone:
# OpenMP's would also hold torch in the engine workers and Whisper to one thread.)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
