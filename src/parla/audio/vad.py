"""Where speech is in a recording: the Silero VAD model that faster-whisper ships, run here.

faster-whisper's own ``get_speech_timestamps`` is a module of that package, and importing it
imports the package (the transcriber, CTranslate2, the tokenizers): some 36 MB in a process of its
own, kept for good, for a voice sample's upload that never transcribes anything. Only the model
file is taken from the package (found, not imported); it is run with onnxruntime, which Piper has
loaded already, and its per-window probabilities are turned into spans as faster-whisper does (the
same spans: the test compares them), with what Parla asks of it: no longest span, no shortest one.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import numpy.typing as npt

RATE = 16000
"""The model's sampling rate."""
WINDOW = 512
"""Samples per probability."""
CONTEXT = 64
"""Samples of the previous window each window is given in front of its own."""
STATE = (1, 1, 128)
"""The shape of the model's recurrent state (h and c), zero for every window."""


def model_path() -> Path:
    """The Silero VAD model inside the installed faster-whisper. Raises ``FileNotFoundError``."""
    spec = importlib.util.find_spec("faster_whisper")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("faster-whisper is not installed: it brings the Silero VAD model")
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder, "assets").glob("silero_vad*.onnx"))
        if found:
            return found[-1]
    raise FileNotFoundError("faster-whisper's assets hold no Silero VAD model")


def speech_probabilities(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The probability of speech in each 512-sample window of 16 kHz ``audio`` (padded to whole
    windows). A session per call: it is small, and then nothing of it stays in memory."""
    import onnxruntime

    padded = np.pad(np.asarray(audio, dtype=np.float32), (0, WINDOW - len(audio) % WINDOW))
    windows = padded.reshape(-1, WINDOW)
    context = np.roll(windows[:, -CONTEXT:], 1, axis=0)
    context[0] = 0.0
    batch = np.ascontiguousarray(np.concatenate([context, windows], axis=1))
    options = onnxruntime.SessionOptions()
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = 1
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 4
    session = onnxruntime.InferenceSession(str(model_path()), sess_options=options, providers=["CPUExecutionProvider"])
    state = np.zeros(STATE, dtype=np.float32)
    outputs = [
        session.run(None, {"input": batch[i : i + 10000], "h": state, "c": state})[0]
        for i in range(0, len(batch), 10000)
    ]
    return np.concatenate(outputs, axis=0).reshape(-1).astype(np.float32)


def speech_spans(
    audio: npt.NDArray[np.float32],
    *,
    threshold: float = 0.5,
    min_silence_ms: float = 300.0,
    pad_ms: float = 100.0,
) -> list[tuple[int, int]]:
    """(start, end) sample indices of the speech in 16 kHz ``audio``. Speech starts at a window whose
    probability reaches ``threshold`` and ends where it falls below ``threshold - 0.15`` for at
    least ``min_silence_ms``; each span is widened by ``pad_ms`` on both sides, or, where the
    silence between two spans is shorter than twice that, up to the middle of it."""
    probabilities = speech_probabilities(audio)
    below = max(threshold - 0.15, 0.01)
    min_silence = RATE * min_silence_ms / 1000
    pad = RATE * pad_ms / 1000
    spans: list[list[int]] = []
    start: int | None = None
    silent_since = 0  # where the current stretch under ``below`` began (0: none)
    for index, probability in enumerate(probabilities):
        at = WINDOW * index
        if probability >= threshold:
            silent_since = 0
            if start is None:
                start = at
                continue
        if start is not None and probability < below:
            if not silent_since:
                silent_since = at
            if at - silent_since >= min_silence:
                spans.append([start, silent_since])
                start, silent_since = None, 0
    if start is not None and len(audio) - start > 0:
        spans.append([start, len(audio)])
    for i, span in enumerate(spans):
        if i == 0:
            span[0] = int(max(0, span[0] - pad))
        if i + 1 < len(spans):
            gap = spans[i + 1][0] - span[1]
            if gap < 2 * pad:
                span[1] += int(gap // 2)
                spans[i + 1][0] = int(max(0, spans[i + 1][0] - gap // 2))
            else:
                span[1] = int(min(len(audio), span[1] + pad))
                spans[i + 1][0] = int(max(0, spans[i + 1][0] - pad))
        else:
            span[1] = int(min(len(audio), span[1] + pad))
    return [(span[0], span[1]) for span in spans]
