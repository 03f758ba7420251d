"""Text for speech: normalisation and splitting into speakable pieces."""

from parla.text.normalize import normalize_text
from parla.text.split import split_for_speech, split_sentences

__all__ = ["normalize_text", "split_for_speech", "split_sentences"]
