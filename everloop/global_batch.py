"""Terms of a loss that look at the whole batch (moments, spreads across clips, BatchNorm
statistics), under torch.distributed: each process holds its share of the batch, and these
give every process the global batch's value, with the gradient of the global batch's term
(torch.distributed.nn's differentiable collectives: a process's rows get the sum of every
process's loss gradient, and averaging the weights' gradients then gives the global one).
At world size 1 each is the plain expression it replaces, bit for bit (distributed.py)."""
from __future__ import annotations

import warnings

import torch
from torch import nn

from .distributed import active, gather, rank, world


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """The rows of the global batch [b x world, ...] from this process's [b, ...], for a term
    that depends on the whole batch (a moment, a spread); `x` itself at world size 1."""
    return gather(x) if active() else x


def gather_each(xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """gather_rows of each of several tensors of one shape, in one collective (each costs a
    round trip to every process); `xs` itself at world size 1."""
    if not active():
        return xs
    rows = gather(torch.stack(xs)).view(world(), len(xs), *xs[0].shape)
    return [torch.cat(list(rows[:, i])) for i in range(len(xs))]


def roll_rows(x: torch.Tensor) -> torch.Tensor:
    """This process's rows of the global batch rolled by one row (x.roll(1, 0) of the whole
    batch): row 0 gets the previous process's last row."""
    if not active():
        return x.roll(1, dims=0)
    last = gather(x[-1:])
    return torch.cat([last[(rank() - 1) % world()][None], x[:-1]])


def mean_rows(x: torch.Tensor) -> torch.Tensor:
    """The mean of `x` over every process's rows (each process holds as many): x.mean() of
    the global batch."""
    return gather(x.mean()[None]).mean() if active() else x.mean()


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are the global batch's, on the CPU: what
    torch.nn.SyncBatchNorm does on GPUs, for which torch has no CPU kernel (batch_norm_stats).
    The per-channel sums go through torch.distributed.nn's differentiable all_reduce, so the
    gradient is that of BatchNorm over the whole batch. Outside training, or alone, it is
    BatchNorm. Its state_dict is BatchNorm's: run folders do not know it was used."""

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and active()):
            return super().forward(x)
        import torch.distributed.nn.functional as dist_nn
        dims, shape = [0, *range(2, x.dim())], [1, -1] + [1] * (x.dim() - 2)
        n = x.numel() // x.shape[1] * world()
        xf = x.float()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            mean = dist_nn.all_reduce(xf.sum(dims)) / n
            centred = xf - mean.view(shape)
            var = dist_nn.all_reduce(centred.pow(2).sum(dims)) / n  # two passes: no cancellation
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * n / max(n - 1, 1), m)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)

    @classmethod
    def like(cls, bn: nn.modules.batchnorm._BatchNorm) -> GlobalBatchNorm:
        """A GlobalBatchNorm holding `bn`'s own parameters and buffers (an optimizer made
        before keeps working), as torch.nn.SyncBatchNorm.convert_sync_batchnorm does."""
        new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            setattr(new, name, getattr(bn, name))
        return new.train(bn.training)


def sync_batchnorm(model: nn.Module, device: torch.device) -> None:
    """Every BatchNorm layer that trains (its weights take gradients) computes its statistics
    over the global batch: torch.nn.SyncBatchNorm on CUDA, GlobalBatchNorm on the CPU. Frozen
    copies (an EMA) keep plain BatchNorm: every process calibrates them on the same draws."""
    if not active():
        return
    swaps = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
             if isinstance(child, nn.modules.batchnorm._BatchNorm)
             and not isinstance(child, (nn.SyncBatchNorm, GlobalBatchNorm))
             and any(p.requires_grad for p in child.parameters())]
    for parent, name, child in swaps:
        new = nn.SyncBatchNorm.convert_sync_batchnorm(child) if device.type == "cuda" else GlobalBatchNorm.like(child)
        setattr(parent, name, new)
