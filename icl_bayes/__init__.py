"""icl_bayes: in-context learning as Bayesian model averaging, measured against its closed forms."""

__version__ = "0.1.0"
