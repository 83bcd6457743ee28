"""Neural experts: a shared 1-D CNN (or ViT) trunk with Gaussian heads, in memory or streamed from HDF5.

torch is imported by the modules that build and train networks (:mod:`.nets`, and inside the
functions of :mod:`.training` and :mod:`.estimator`), never by ``import snrmoe_lib``.

Modules
    * :mod:`.nets` — the trunks (:class:`~.nets.CNNTrunk`, :class:`~.nets.ViTTrunk`), FiLM, Gaussian heads.
    * :mod:`.training` — the loop: seeded batches in fixed blocks, β-NLL, early stopping, an atomic
      checkpoint per epoch, ``resume``, divergence detection, ``device='auto'``.
    * :mod:`.stream` — :class:`~.stream.StreamSource` (training rows through ``data.passes.split_pass``
      with fresh noise per epoch keyed by (seed, epoch, row)) and :class:`~.stream.SpectrumInputs`
      (binned, optionally whitened flux, then leak-free quality features).
    * :mod:`.estimator` — :class:`~.estimator.NeuralExperts`, the expert interface of
      :class:`snrmoe_lib.models.experts.BinnedExperts` plus Gaussian σ.

A ``neural`` family in the q4 family registry
    Each entry of the family is one :class:`NeuralExperts` (cloned per seed) and the prediction the
    table reads from it; ``X`` is the matrix :class:`~.stream.SpectrumInputs` makes (binned flux,
    then the quality columns when ``n_quality`` > 0), ``bins`` the true SNR bins, ``R`` the soft
    oracle's responsibilities and ``P`` the deployed gate's probabilities, all (n, K)::

        global       NeuralExperts(variant="global").fit(X, y, X_val=Xv, y_val=yv)      .predict_global(X_test)
        oracle_hard  NeuralExperts(variant="heads").fit(X, y, bins=b, ...)              .predict(X_test, bins=b_test)
        oracle_soft  NeuralExperts(variant="heads").fit(X, y, responsibilities=R, ...)  .predict_mixture(X_test, R_test)
        deployed     the oracle_hard (or oracle_soft) model                             .predict_mixture(X_test, P_test)
        film         NeuralExperts(variant="film", n_quality=Q).fit(X_q, y, ...)        .predict(X_q_test)
        residual     NeuralExperts(variant="residual").fit(X, y, bins=b, ...)           .predict_mixture(X_test, P_test)

    Every prediction method takes ``return_std=True`` for the Gaussian σ (``predict_std`` too), which
    the coverage and calibration steps use. For a large run, fit with
    ``fit_stream(StreamSource(ds, split.train, split.val, noise_level, seed, inputs, route=SnrBins(edges)))``
    instead of ``fit``: the same estimator, trained from the HDF5 file in chunks.
"""
from snrmoe_lib.models.neural.estimator import VARIANTS, NeuralExperts
from snrmoe_lib.models.neural.stream import SnrBins, SpectrumInputs, StreamSource
from snrmoe_lib.models.neural.training import CheckpointError, TrainingDivergedError, resolve_device

__all__ = ["NeuralExperts", "VARIANTS", "StreamSource", "SpectrumInputs", "SnrBins", "TrainingDivergedError",
           "CheckpointError", "resolve_device"]
