"""icl_bayes: in-context learning as Bayesian model averaging, measured against its closed forms."""

from ntk_lab import (
    __version__ as __version__,  # one version for the distribution (ntk-lab)
)
