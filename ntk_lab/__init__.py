"""ntk-lab: prompt-based fine-tuning of masked LMs as kernel regression with their empirical NTK."""

__version__ = "0.1.0"
