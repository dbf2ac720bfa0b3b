"""Flax BERT/RoBERTa masked LMs that load Hugging Face checkpoints."""

from ntk_lab.models.checkpoint import LoadedMaskedLM, load_masked_lm, save_masked_lm
from ntk_lab.models.encoder import EncoderConfig, MaskedLM

__all__ = ["EncoderConfig", "LoadedMaskedLM", "MaskedLM", "load_masked_lm", "save_masked_lm"]
