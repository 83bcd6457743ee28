"""The Fisher / Cramér–Rao ceiling on log g: what any model can learn from the spectra.

* :mod:`~snrmoe_lib.ceiling.jacobians` — ∂flux/∂θ by autograd of a mock forward model, by finite
  differences of it, or along the lattice of a grid file;
* :mod:`~snrmoe_lib.ceiling.stars` — the lattice stars of the per-magnitude ceiling;
* :mod:`~snrmoe_lib.ceiling.per_star` — streamed Fisher matrices per star and magnitude, per-star ceilings;
* :mod:`~snrmoe_lib.ceiling.crlb` — Fisher matrices, the marginal CRLB (Schur complement), R²_max;
* :mod:`~snrmoe_lib.ceiling.priors` — the random set's beta sampling prior;
* :mod:`~snrmoe_lib.ceiling.bayes` — bounds that also bind biased (shrinkage) estimators.

The analysis that applies these to a configuration (grid files, per-star frames, tables per
magnitude and SNR bin) is :mod:`snrmoe_lib.analyses.k1`.
"""
from snrmoe_lib.ceiling.bayes import bayesian_crlb, van_trees_bound, van_trees_sampling_prior
from snrmoe_lib.ceiling.crlb import CRLBInfo, ceiling_summary, fisher_matrix, marginal_crlb, r2_max
from snrmoe_lib.ceiling.jacobians import (PARAM_NAMES, GridJacobian, Lattice, detect_lattice, grid_jacobian,
                                          grid_jacobian_dataset, jacobian_autograd, jacobian_fd, usable_rows)
from snrmoe_lib.ceiling.priors import beta_density, beta_prior_information, beta_variance, prior_informations, prior_variances

__all__ = ["PARAM_NAMES", "jacobian_autograd", "jacobian_fd", "Lattice", "detect_lattice", "usable_rows", "GridJacobian",
           "grid_jacobian", "grid_jacobian_dataset", "fisher_matrix", "CRLBInfo", "marginal_crlb", "r2_max",
           "ceiling_summary", "beta_variance", "beta_prior_information", "prior_variances", "prior_informations",
           "beta_density", "bayesian_crlb", "van_trees_bound", "van_trees_sampling_prior"]
