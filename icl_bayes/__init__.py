"""icl_bayes: in-context learning as Bayesian model averaging, measured against its closed forms."""

from ntk_lab import __version__  # one version for the distribution (ntk-lab)

__all__ = ["__version__"]
