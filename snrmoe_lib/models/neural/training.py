"""The training loop of the neural experts: seeded batches, β-NLL, early stopping, checkpoints, resume.

Data arrive as an iterator of *row blocks* (dicts of equal-length numpy arrays) in a fixed order —
the rows of an in-memory array, or the chunks of a streamed pass. :func:`reblock` cuts them into
blocks of a fixed number of rows whatever the chunk size; each block's rows are shuffled by the
``neural.batch_order`` stream keyed by (seed, epoch, block) and cut into minibatches. So the
minibatches, hence the weights, do not depend on how the rows were chunked.

The loss of a batch is ``Σ_ih W_ih · ℓ_β(y_ih; μ_ih, σ²_ih) / Σ_i sw_i`` with the β-NLL of Seitz et
al. (2022), ``ℓ_β = ½ (log σ² + (y − μ)²/σ²) · stop_grad(σ²)^β``: β = 0 is the Gaussian NLL, β = 1
weighs every point like the squared error (stable mean fits; the variance still learns). ``W``
(rows × heads) says which heads a row trains (its bin, its responsibility, the auxiliary weight).

A checkpoint (a ``torch.save`` of tensors, plain numbers and lists only, read back with
``weights_only=True``) is written atomically after every epoch; with ``resume`` the loop continues
from it and ends where an uninterrupted run ends.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from snrmoe_lib._util.rng import rng as _rng
from snrmoe_lib.data.writers import AtomicWriter

__all__ = ["TrainSettings", "TrainingDivergedError", "CheckpointError", "resolve_device", "torch_session",
           "beta_nll", "reblock", "train_network", "save_checkpoint", "load_checkpoint"]

Rows = dict  # name -> ndarray with one leading row axis


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


class CheckpointError(ValueError):
    """A checkpoint cannot be used (unreadable, or written by a model with other settings)."""


@dataclass
class TrainSettings:
    """What the loop needs besides the network and the data (plain values)."""

    max_epochs: int
    batch_size: int
    shuffle_block: int
    lr: float
    weight_decay: float
    beta: float
    patience: int
    seed: int
    device: str = "cpu"
    progress: bool = False
    checkpoint: Path | None = None
    resume: bool = False
    fingerprint: str = ""
    label: str = "train"
    on_epoch_end: Callable | None = field(default=None, repr=False)


def resolve_device(device: str) -> str:
    """``'auto'`` → ``'cuda'`` when torch sees a GPU, else ``'cpu'``; ``'cpu'``/``'cuda[:n]'`` as given
    (``'cuda'`` without a GPU is an error)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if isinstance(device, str) and device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but torch sees no CUDA device; use device='auto' or 'cpu'")
        return device
    raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:n]', got {device!r}")


@contextmanager
def torch_session(n_threads: int | None):
    """torch with ``n_threads`` CPU threads and deterministic algorithms, restored afterwards."""
    import torch

    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    if n_threads is not None:
        torch.set_num_threads(int(n_threads))
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield torch
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def beta_nll(mu, var, y, beta: float):
    """Per-element β-NLL (Seitz et al. 2022): ``½(log var + (y−μ)²/var) · var.detach()^β``."""
    nll = 0.5 * (var.log() + (y - mu) ** 2 / var)
    return nll * var.detach() ** beta if beta else nll


def reblock(chunks: Iterable[Rows], size: int) -> Iterator[Rows]:
    """Blocks of exactly ``size`` rows (the last one shorter) from chunks of any sizes, in order."""
    held: list[Rows] = []
    n_held = 0
    for chunk in chunks:
        n = len(next(iter(chunk.values())))
        if not n:
            continue
        held.append(chunk)
        n_held += n
        while n_held >= size:
            block = {k: np.concatenate([c[k] for c in held]) for k in held[0]}
            yield {k: v[:size] for k, v in block.items()}
            rest = {k: v[size:] for k, v in block.items()}
            n_held -= size
            held = [rest] if n_held else []
    if n_held:
        yield {k: np.concatenate([c[k] for c in held]) for k in held[0]}


def _batches(chunks: Iterable[Rows], s: TrainSettings, epoch: int) -> Iterator[Rows]:
    for b, block in enumerate(reblock(chunks, s.shuffle_block)):
        n = len(block["x"])
        order = _rng("neural.batch_order", s.seed, epoch, b).permutation(n)
        for i in range(0, n, s.batch_size):
            take = order[i:i + s.batch_size]
            yield {k: v[take] for k, v in block.items()}


def _tensors(torch, rows: Rows, device: str) -> dict:
    return {k: torch.as_tensor(np.ascontiguousarray(v), dtype=torch.float32).to(device) for k, v in rows.items()}


def _loss(torch, net, t: dict, beta: float):
    """(summed weighted loss, summed sample weight) of one batch."""
    mu, var = net(t["x"], t.get("q"))
    return (t["W"] * beta_nll(mu, var, t["y"], beta)).sum(), t["sw"].sum()


def _train_epoch(torch, net, opt, chunks, s: TrainSettings, epoch: int) -> float:
    net.train()
    total, weight = 0.0, 0.0
    for b, rows in enumerate(_batches(chunks, s, epoch)):
        t = _tensors(torch, rows, s.device)
        loss_sum, sw = _loss(torch, net, t, s.beta)
        loss = loss_sum / sw.clamp_min(1e-12)
        if not torch.isfinite(loss):
            raise TrainingDivergedError(
                f"{s.label}: the loss became {loss.item()} at epoch {epoch}, batch {b} (lr={s.lr}, beta={s.beta}); "
                "lower lr, raise var_floor or beta (β = 1 is the most stable), or check the inputs for NaN/inf")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss_sum.detach())
        weight += float(sw)
    if not weight:
        raise ValueError(f"{s.label}: no training rows (or every sample weight is zero)")
    return total / weight


def evaluate(torch, net, chunks: Iterable[Rows], s: TrainSettings) -> float:
    """The weighted mean loss over every row of ``chunks`` (in fixed blocks of ``batch_size`` rows)."""
    net.eval()
    total, weight = 0.0, 0.0
    with torch.no_grad():
        for rows in reblock(chunks, s.batch_size):
            loss_sum, sw = _loss(torch, net, _tensors(torch, rows, s.device), s.beta)
            total += float(loss_sum)
            weight += float(sw)
    return total / weight if weight else math.nan


def save_checkpoint(path: Path, state: dict) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) atomically to ``path``."""
    import torch

    with AtomicWriter(path, overwrite=True) as w:
        torch.save(state, w.tmp)
    return Path(path)


def load_checkpoint(path: Path, fingerprint: str) -> dict:
    """Read a checkpoint safely (``weights_only=True``) and check it was written by the same model."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear error
        raise CheckpointError(f"{path}: cannot read the checkpoint: {exc}") from exc
    if state.get("fingerprint") != fingerprint:
        raise CheckpointError(f"{path}: written by a model with other settings or data (fingerprint "
                              f"{state.get('fingerprint')!r}, this model {fingerprint!r}); remove it or "
                              "use another checkpoint_dir")
    return state


def _cpu_state(net) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}


def train_network(net, params: list, train_chunks: Callable[[int], Iterable[Rows]],
                  val_chunks: Callable[[], Iterable[Rows]] | None, s: TrainSettings) -> list[dict]:
    """Train ``params`` of ``net`` (already on ``s.device``) and leave it at its best validation epoch.

    ``train_chunks(epoch)`` gives that epoch's training rows (fresh noise per epoch when streamed);
    ``val_chunks()`` the validation rows (the same every epoch), or None: no early stopping, the
    last epoch is kept. Returns the history: one dict per epoch (``epoch``, ``train_loss``, ``val_loss``).
    """
    import torch
    from tqdm.auto import tqdm

    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay, foreach=True)
    state = {"epoch": -1, "best_loss": math.inf, "best_state": None, "bad": 0, "history": []}
    if s.resume and s.checkpoint is not None and Path(s.checkpoint).exists():
        state = load_checkpoint(Path(s.checkpoint), s.fingerprint)
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
    bar = tqdm(range(state["epoch"] + 1, s.max_epochs), desc=s.label, unit="epoch", disable=not s.progress,
               initial=state["epoch"] + 1, total=s.max_epochs)
    for epoch in bar:
        if state["bad"] >= s.patience:
            break
        train_loss = _train_epoch(torch, net, opt, train_chunks(epoch), s, epoch)
        val_loss = evaluate(torch, net, val_chunks(), s) if val_chunks is not None else math.nan
        if val_chunks is None or val_loss < state["best_loss"]:
            state.update(best_loss=val_loss, best_state=_cpu_state(net), bad=0)
        else:
            state["bad"] += 1
        state["history"].append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss})
        state["epoch"] = epoch
        bar.set_postfix(train=f"{train_loss:.4f}", val=f"{val_loss:.4f}")
        if s.checkpoint is not None:
            save_checkpoint(Path(s.checkpoint), {**state, "fingerprint": s.fingerprint, "net": _cpu_state(net),
                                                 "opt": opt.state_dict()})
        if s.on_epoch_end is not None:
            s.on_epoch_end(epoch, state["history"][-1])
    bar.close()
    if state["best_state"] is not None:
        net.load_state_dict(state["best_state"])
    return list(state["history"])
