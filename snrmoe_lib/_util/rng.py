"""Named random streams: every random draw of the project comes from one entry of this registry.

A stream is named by what it is for (``rng("audit.train_order", seed)``) and has a *layout*: the
entropy tuple handed to :class:`numpy.random.SeedSequence`, built from the run's seed, the
per-draw keys (a row, a shuffle index) and fixed salts. Two consumers share random numbers exactly
when their entropy tuples can coincide, which :func:`overlaps` decides from the layouts alone, so a
test can check the whole registry (``tests/test_rng.py``).

The layouts reproduce the draws the project made before the registry existed, number for number.
A few of those old layouts can coincide with each other; they are listed in :data:`KNOWN_SHARED`
with the reason they are kept. A new stream must not add to that list: give it a fresh salt.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Union

import numpy as np

__all__ = ["Stream", "STREAMS", "KNOWN_SHARED", "rng", "entropy", "torch_generator", "overlaps", "shared_pairs"]

Slot = Union[int, str]
"""One position of a layout: ``"seed"``, the name of a per-draw key, or a fixed salt (an int)."""


@dataclass(frozen=True)
class Stream:
    """A named random stream: what it is for and how its entropy tuple is laid out."""

    name: str
    layout: tuple[Slot, ...]
    purpose: str
    family: str = "numpy"

    @property
    def keys(self) -> tuple[str, ...]:
        """The per-draw keys a caller must pass, in order (``"seed"`` excluded)."""
        return tuple(s for s in self.layout if isinstance(s, str) and s != "seed")


def _streams(*items: Stream) -> dict[str, Stream]:
    out: dict[str, Stream] = {}
    for s in items:
        if s.name in out:
            raise ValueError(f"random stream {s.name!r} registered twice")
        out[s.name] = s
    return out


STREAMS: dict[str, Stream] = _streams(
    # data
    Stream("split.permutation", ("seed",), "the train/val/test permutation of the dataset's rows"),
    Stream("noise.flux", ("seed", "row"), "the protocol's N(0, 1) per pixel, one stream per (seed, row)"),
    Stream("mock.stellar", ("seed", 0), "the mock's stellar labels (beta distributions)"),
    Stream("mock.conditions", ("seed", 1), "the mock's observing conditions"),
    Stream("mock.line_list", ("seed",), "the mock's weak-line forest (a fixed seed in the instrument file)"),
    Stream("mock.sky", ("seed",), "the mock's OH forest and sky bands (fixed seeds in the instrument file)"),
    # mock observing conditions
    Stream("mock.seeing", ("seed", 5500, 5501), "the mock's per-star seeing (log-normal draws within the range)"),
    # features / models
    Stream("gate.fit_subsample", ("seed", 37), "the training rows a gate learns from (at most gate.train_n)"),
    Stream("gate.template_subsample", ("seed", 31), "the training rows quality templates and flux PCA are fit on"),
    Stream("bagging.partition", ("seed", 4101, 4102, "chunk"),
           "Q1/Q3 bagging control: the SNR labels shuffled among one chunk's training rows"),
    Stream("learning_curve.order", ("seed", 4201, 4202, 4203), "learning curve: the order nested training sizes take rows in"),
    Stream("gate.holdout", ("seed", 4301, 4302, 4303), "Q3: the training rows carved out for the regression gate and blends"),
    Stream("torch.init", ("seed",), "torch weight initialisation and minibatch order", family="torch"),
    # models.neural
    Stream("neural.init", ("seed", 5201), "neural experts: initial weights of trunk and heads", family="torch"),
    Stream("neural.batch_order", ("seed", 5202, "epoch", "block"),
           "neural experts: the order of one shuffle block's training rows in one epoch"),
    Stream("neural.epoch_noise", ("seed", 5203, "epoch"),
           "neural experts: the noise seed of one epoch's training rows (the draws are noise.flux at that "
           "seed, keyed by row, so (seed, epoch, row) fixes a spectrum's noise whatever the chunking)"),
    # analyses
    Stream("audit.train_order", ("seed", 7), "Q2 audit: order of the training rows it subsamples"),
    Stream("audit.subsample", ("seed", 11), "Q2 audit: validation and test rows it subsamples"),
    Stream("audit.label_shuffle", ("seed", 101, "k"), "Q2 control: the k-th shuffle of the labels"),
    Stream("audit.pixel_shuffle", ("seed", 202, "row"), "Q2 control: pixel order of one spectrum's σ"),
    Stream("audit.pixel_order", ("seed", 303), "Q2 control: one pixel order shared by every spectrum"),
    Stream("fisher.stars", ("seed",), "K1: the grid stars whose Jacobians are computed"),
    Stream("fisher.bin_stars", ("seed", 1), "K1: the test stars of the per-bin ceiling"),
    Stream("fisher.lattice_stars", ("seed", 4101, 4102), "K1: the lattice stars of R²_max per magnitude"),
    Stream("fisher.map_stars", ("seed", 4111, 4112), "K1: the frozen-test stars the MAP template fit runs on"),
    Stream("fisher.map_starts", ("seed", 4121, 4122), "K1: the candidate starting points of the MAP fit"),
    # stronger experts (Q4): boosted trees, the in-memory training rows, the trees' own randomness
    Stream("boosted.train_subsample", ("seed", 5101, 5102), "boosted trees: the training rows kept above max_train_rows"),
    Stream("boosted.trees", ("seed", 5111, 5112), "boosted trees: the integer random_state handed to scikit-learn"),
    Stream("q4.train_rows", ("seed", 5121, 5122), "Q4: the training rows held in memory (at most q4.max_train_rows)"),
    # Q4's neural family
    Stream("q4.neural_rows", ("seed", 5600, 5601), "Q4: the training rows the nets see (at most q4.neural_train_rows)"),
    # evaluation / reporting
    Stream("bootstrap.stars", ("seed",), "bootstrap resamples of test stars (shared by every model of a run: paired)"),
    Stream("bootstrap.seeds", ("seed", 9001, 9002), "two-level bootstrap: the seeds (training realisations) each draw averages"),
    Stream("plots.jitter", ("seed",), "the subsample of points a scatter plot shows"),
)

KNOWN_SHARED: dict[frozenset, str] = {
    frozenset(pair): why for pair, why in [
        # a run seed of 7 or 11 for the audit equals a noise row 7 or 11 of that seed: the audit permutes
        # rows with it while the noise draws normals; kept so that moving the code changed no number
        (("noise.flux", "audit.train_order"), "legacy salt (seed, 7) = noise of row 7"),
        (("noise.flux", "audit.subsample"), "legacy salt (seed, 11) = noise of row 11"),
        (("noise.flux", "gate.template_subsample"), "legacy salt (seed, 31) = noise of row 31"),
        (("noise.flux", "gate.fit_subsample"), "legacy salt (seed, 37) = noise of row 37"),
        (("noise.flux", "mock.stellar"), "legacy salt (seed, 0) = noise of row 0 (different dataset seeds in practice)"),
        (("noise.flux", "mock.conditions"), "legacy salt (seed, 1) = noise of row 1 (different dataset seeds in practice)"),
        (("noise.flux", "fisher.bin_stars"), "legacy salt (seed, 1) = noise of row 1 (fisher.seed vs noise seeds)"),
        (("noise.flux", "audit.pixel_order"), "legacy salt (seed, 303) = noise of row 303"),
        (("mock.conditions", "fisher.bin_stars"), "legacy salt (seed, 1) in both (a dataset seed vs fisher.seed)"),
        # one-slot layouts: a bare seed; the seeds come from different parameters (split.seed, the
        # bootstrap seed, fisher.seed, fixed seeds in the instrument file) but can be equal
        *[((a, b), "legacy bare-seed layout")
          for a, b in combinations(["split.permutation", "mock.line_list", "mock.sky", "fisher.stars",
                                    "bootstrap.stars", "plots.jitter"], 2)],
    ]
}


def _stream(name: str) -> Stream:
    try:
        return STREAMS[name]
    except KeyError:
        raise KeyError(f"unknown random stream {name!r}; registered: {sorted(STREAMS)}") from None


def entropy(name: str, seed: int, *keys: int) -> tuple[int, ...] | int:
    """The entropy a stream hands to :class:`numpy.random.SeedSequence` for ``seed`` and ``keys``."""
    st = _stream(name)
    if len(keys) != len(st.keys):
        raise TypeError(f"random stream {name!r} takes keys {st.keys}, got {len(keys)} value(s)")
    values = iter(int(k) for k in keys)
    out = tuple(int(seed) if s == "seed" else (next(values) if isinstance(s, str) else s) for s in st.layout)
    return out[0] if len(out) == 1 else out


def rng(name: str, seed: int, *keys: int) -> np.random.Generator:
    """A numpy generator for the named stream (see :data:`STREAMS`) at ``seed`` and ``keys``."""
    return np.random.default_rng(entropy(name, seed, *keys))


def torch_generator(name: str, seed: int, *keys: int, device: str = "cpu"):
    """A ``torch.Generator`` (on ``device``) seeded for the named stream.

    A bare-seed layout seeds torch with the seed itself (as before); a longer layout seeds it with
    64 bits drawn from its entropy tuple by :class:`numpy.random.SeedSequence`.
    """
    import torch

    st = _stream(name)
    if st.family != "torch":
        raise TypeError(f"random stream {name!r} is a {st.family} stream, not a torch one")
    e = entropy(name, seed, *keys)
    if not isinstance(e, int):
        e = int(np.random.SeedSequence(e).generate_state(1, np.uint64)[0] >> np.uint64(1))
    return torch.Generator(device=device).manual_seed(e)


def overlaps(a: Stream, b: Stream) -> bool:
    """Whether two streams can produce the same draws: same generator family and layouts whose entropy
    tuples can coincide (a seed or key slot matches any value)."""
    if a.family != b.family or len(a.layout) != len(b.layout):
        return False
    return all(not (isinstance(x, int) and isinstance(y, int)) or x == y for x, y in zip(a.layout, b.layout))


def shared_pairs() -> set[frozenset]:
    """Every pair of registered streams whose draws can coincide."""
    return {frozenset((a.name, b.name)) for a, b in combinations(STREAMS.values(), 2) if overlaps(a, b)}
