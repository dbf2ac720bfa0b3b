"""Flax BERT/RoBERTa masked LMs that load Hugging Face checkpoints."""

from ntk_lab.models.checkpoint import LoadedMaskedLM, load_masked_lm, save_masked_lm
from ntk_lab.models.encoder import EncoderConfig, MaskedLM
from ntk_lab.models.tiny import TINY_MODELS, build_tiny

__all__ = ["EncoderConfig", "LoadedMaskedLM", "MaskedLM", "TINY_MODELS", "build_tiny", "load_masked_lm", "save_masked_lm"]
