"""The torch modules: a 1-D CNN trunk (default), a small 1-D ViT trunk, FiLM conditioning, Gaussian heads.

A network maps a batch of binned spectra ``x`` (B, D) and optional quality features ``q`` (B, Q) to
one Gaussian (mean, variance) per head: ``mu, var`` of shape (B, H). Heads are laid out as
``[main heads..., auxiliary heads...]``; which main heads exist (one global, K per SNR bin, or a
global plus K correctors) is decided by the estimator (:mod:`snrmoe_lib.models.neural.estimator`).

Everything here is plain torch; initial weights come from a seeded generator
(:func:`snrmoe_lib._util.rng.torch_generator`), never from torch's global random state.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["CNNTrunk", "ViTTrunk", "FiLM", "GaussianHeads", "Network", "build_network", "init_weights"]


class FiLM(nn.Module):
    """Feature-wise linear modulation: ``h · (1 + γ(q)) + β(q)`` per channel, γ and β from a small MLP.

    The last layer starts at zero, so an untrained FiLM is the identity.
    """

    def __init__(self, n_cond: int, channels: int, hidden: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_cond, hidden), nn.GELU(), nn.Linear(hidden, 2 * channels))
        self.channels = channels

    def forward(self, h: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        gb = self.net(q)
        gamma, beta = gb[:, : self.channels], gb[:, self.channels:]
        if h.dim() == 3:  # (B, C, L)
            gamma, beta = gamma[:, :, None], beta[:, :, None]
        return h * (1 + gamma) + beta


class CNNTrunk(nn.Module):
    """A 1-D CNN: a strided stem, then conv blocks (conv → [FiLM] → GELU → average pool), then a
    linear map to ``width`` features.

    Parameters
    ----------
    n_in : int
        Input length (binned pixels).
    channels : tuple of int
        Channels of the stem and of each following block.
    kernel : int
        Kernel size of the blocks (the stem's kernel equals its stride).
    stem_stride : int
        Stride of the stem (the first down-sampling).
    pool : int
        Average-pool factor after each block.
    width : int
        Output features.
    n_cond : int
        Quality features for FiLM (0: no conditioning).
    """

    def __init__(self, n_in: int, channels=(16, 32), kernel: int = 5, stem_stride: int = 8, pool: int = 4,
                 width: int = 64, n_cond: int = 0):
        super().__init__()
        chans = [int(c) for c in channels]
        self.stem = nn.Conv1d(1, chans[0], stem_stride, stride=stem_stride)
        self.blocks = nn.ModuleList(nn.Conv1d(a, b, kernel, padding=kernel // 2) for a, b in zip(chans, chans[1:]))
        self.films = nn.ModuleList(FiLM(n_cond, c) for c in chans) if n_cond else None
        self.pool = nn.AvgPool1d(pool) if pool > 1 else nn.Identity()
        length = n_in // stem_stride
        for _ in chans[1:]:
            length //= max(pool, 1)
        if length < 1:
            raise ValueError(f"input of {n_in} pixels is too short for stem_stride={stem_stride}, pool={pool} "
                             f"and {len(chans) - 1} block(s)")
        self.out = nn.Linear(chans[-1] * length, width)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor, q: torch.Tensor | None = None) -> torch.Tensor:
        h = self.stem(x[:, None, :])
        if self.films is not None:
            h = self.films[0](h, q)
        h = self.act(h)
        for i, conv in enumerate(self.blocks):
            h = conv(h)
            if self.films is not None:
                h = self.films[i + 1](h, q)
            h = self.pool(self.act(h))
        return self.act(self.out(h.flatten(1)))


class ViTTrunk(nn.Module):
    """A small 1-D vision transformer: non-overlapping patches, a learned position embedding,
    pre-norm encoder layers, mean pooling, optional FiLM on the pooled features.

    Parameters
    ----------
    n_in : int
        Input length; must be a multiple of ``patch``.
    patch, width, depth, heads : int
        Patch size, token width, encoder layers, attention heads (``width`` divisible by ``heads``).
    n_cond : int
        Quality features for FiLM (0: none).
    """

    def __init__(self, n_in: int, patch: int = 16, width: int = 64, depth: int = 2, heads: int = 4, n_cond: int = 0):
        super().__init__()
        if n_in % patch:
            raise ValueError(f"input of {n_in} pixels is not a multiple of vit_patch={patch}")
        if width % heads:
            raise ValueError(f"width={width} is not divisible by vit_heads={heads}")
        self.embed = nn.Conv1d(1, width, patch, stride=patch)
        self.pos = nn.Parameter(torch.zeros(1, n_in // patch, width))
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.film = FiLM(n_cond, width) if n_cond else None

    def forward(self, x: torch.Tensor, q: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.embed(x[:, None, :]).transpose(1, 2) + self.pos
        h = self.norm(self.encoder(tokens).mean(dim=1))
        return self.film(h, q) if self.film is not None else h


class GaussianHeads(nn.Module):
    """``n_heads`` Gaussian heads on shared features: a mean and a variance each.

    The variance is ``softplus(raw) + var_floor`` (in standardised target units), so it stays
    positive and never collapses below the floor. ``hidden`` > 0 gives every head a small hidden
    layer (the light correctors of the residual variant); 0 is one linear map for all heads.
    """

    def __init__(self, width: int, n_heads: int, var_floor: float = 1e-3, hidden: int = 0):
        super().__init__()
        self.n_heads = n_heads
        self.var_floor = float(var_floor)
        if hidden:
            self.net = nn.Sequential(nn.Linear(width, hidden * n_heads), nn.GELU())
            self.out = _GroupedLinear(n_heads, hidden, 2)
        else:
            self.net, self.out = nn.Identity(), nn.Linear(width, 2 * n_heads)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.out(self.net(h)).reshape(len(h), self.n_heads, 2)
        return z[..., 0], nn.functional.softplus(z[..., 1]) + self.var_floor


class _GroupedLinear(nn.Module):
    """One small linear map per head, applied to that head's slice of the hidden features."""

    def __init__(self, groups: int, d_in: int, d_out: int):
        super().__init__()
        self.groups, self.d_in = groups, d_in
        self.weight = nn.Parameter(torch.zeros(groups, d_in, d_out))
        self.bias = nn.Parameter(torch.zeros(groups, d_out))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h.reshape(len(h), self.groups, self.d_in)
        return torch.einsum("bgi,gio->bgo", h, self.weight) + self.bias


class Network(nn.Module):
    """Trunk + Gaussian heads (+ optional corrector heads on the frozen trunk, for the residual variant).

    ``forward(x, q)`` returns ``(mu, var)`` of shape (B, n_heads). With correctors, the corrector
    means are residuals added to the first (global) head's mean: head 1 + k is ``μ_global + r_k``.
    """

    def __init__(self, trunk: nn.Module, width: int, n_heads: int, var_floor: float, n_correctors: int = 0,
                 corrector_hidden: int = 16):
        super().__init__()
        self.trunk = trunk
        self.heads = GaussianHeads(width, n_heads, var_floor)
        self.correctors = (GaussianHeads(width, n_correctors, var_floor, hidden=corrector_hidden)
                           if n_correctors else None)

    def forward(self, x: torch.Tensor, q: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x, q)
        mu, var = self.heads(h)
        if self.correctors is None:
            return mu, var
        r_mu, r_var = self.correctors(h.detach())  # the global model stays frozen in stage 2
        return torch.cat([mu, mu[:, :1].detach() + r_mu], dim=1), torch.cat([var, r_var], dim=1)


def build_network(arch: str, n_in: int, n_cond: int, n_heads: int, *, width: int, channels, kernel: int,
                  stem_stride: int, pool: int, vit_patch: int, vit_depth: int, vit_heads: int, var_floor: float,
                  n_correctors: int = 0) -> Network:
    """The network of an estimator's hyper-parameters (``arch`` 'cnn' or 'vit')."""
    if arch == "cnn":
        trunk = CNNTrunk(n_in, channels, kernel, stem_stride, pool, width, n_cond)
    elif arch == "vit":
        trunk = ViTTrunk(n_in, vit_patch, width, vit_depth, vit_heads, n_cond)
    else:
        raise ValueError(f"arch must be 'cnn' or 'vit', got {arch!r}")
    return Network(trunk, width, n_heads, var_floor, n_correctors)


def init_weights(net: nn.Module, gen: torch.Generator) -> None:
    """Seeded initial weights: every weight matrix N(0, 1/fan_in) (scaled-down for the heads' outputs),
    biases and position embeddings zero, layer norms at identity, FiLM and correctors' outputs zero."""
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.dim() >= 2 and not name.endswith("pos") and "films" not in name and "film." not in name:
                fan_in = p.shape[1] if name.startswith("correctors.out") else p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(max(fan_in, 1)))
            elif "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()
        for mod in net.modules():
            if isinstance(mod, FiLM):
                first = mod.net[0]
                first.weight.copy_(torch.randn(first.weight.shape, generator=gen) / math.sqrt(first.in_features))
                mod.net[-1].weight.zero_()
        net.heads.out.weight.mul_(0.1)  # small initial means and variances: a calm start for the NLL
        if net.correctors is not None:
            net.correctors.out.weight.zero_()  # the correctors start as "no correction"
