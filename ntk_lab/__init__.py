"""ntk-lab: prompt-based fine-tuning of masked LMs as kernel regression with their empirical NTK."""

__version__ = "0.1.0"

# the offline tiny models: registered with ntk_lab.models on import (ntk_lab.tiny needs models and tasks,
# so it lives above both; see its docstring)
from ntk_lab import tiny as _tiny  # noqa: E402,F401
