"""Data-parallel ``train`` and ``repair`` under ``torchrun`` (one process per GPU or per group of cores).

``torchrun --standalone --nproc_per_node N -m deeprepair train|repair ...`` starts N copies of the
command; torchrun's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``) tells each which one it
is. One process is the ordinary path, unchanged: every function here is then a no-op.

How N processes compute what one process computes (for a fixed seed, up to the order of
floating-point sums):

- Every rank draws the same global batch from the same seeded generators (shuffle, crop/flip,
  AugMix/StyleAug chains, mixup pairs, field images), exactly as one process does, so the
  random choices never depend on the number of processes.
- Only the network is split: ``wrap(model)`` returns a module that runs the model on this rank's
  contiguous slice of the batch (``shard``) and gathers the logits of the whole batch from all
  ranks. The loss is then computed on the global batch, identically on every rank, by the same
  code as in one process: means, the JSD term, distillation and uneven last batches need no
  reweighting.
- Backward sends each rank (world size) x the gradient of its own slice's logits;
  ``average_gradients`` all-reduces the parameter gradients and divides by the world size, so
  every rank applies the single-process gradient (terms that every rank computes in full, such
  as the L2 pull, are counted once).
- BatchNorm layers in training mode normalise with the statistics of the global batch
  (mean and variance all-reduced across ranks, two passes, with gradients through the
  reduction), as ``torch.nn.SyncBatchNorm`` does. torch's own SyncBatchNorm refuses CPU
  tensors ("expected input tensor to be on GPU"), and swapping modules would break
  ``repair/tuning.py``'s frozen-norm bookkeeping, so ``wrap`` gives each BatchNorm instance a
  synced forward instead (eval mode is untouched).

This is DistributedDataParallel's arithmetic (all-reduced gradient averages) without its module
wrapper: a repair step runs the network more than once before ``backward`` (unlabelled field
images, SENSEI's search), which DDP's reducer does not allow. Gradients are all-reduced once per
step after ``backward``, in one flat buffer: no overlap of communication with the backward pass,
which costs little on CPU and with small models.

Only rank 0 writes (``is_main``): checkpoints, resumable state files, reports, progress bars.
All ranks read the same state file when resuming. Dropout draws its masks per rank for its
slice, so a model with dropout matches one process in distribution only (the registry's
ResNet-20 has none).
"""

from __future__ import annotations

import atexit
import os
import types

import torch
import torch.distributed as dist
import torch.nn as nn

__all__ = ["world_size", "rank", "is_main", "setup", "barrier", "shard", "wrap", "average_gradients"]


def world_size() -> int:
    """Number of processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """True in the one process that writes files and prints (rank 0; always, without torchrun)."""
    return rank() == 0


def setup() -> None:
    """Join the process group torchrun describes (gloo for CPU tensors, NCCL for CUDA tensors) and
    make this rank's GPU (``LOCAL_RANK``) the current one. A no-op in one process, or when done."""
    if world_size() <= 1 or dist.is_initialized():
        return
    if not dist.is_available():
        from .errors import DeepRepairError

        raise DeepRepairError("torchrun started several processes but this torch build has no torch.distributed")
    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend)
    atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())


def barrier() -> None:
    if world_size() > 1:
        setup()
        dist.barrier()


def shard(n: int, r: int | None = None, w: int | None = None) -> slice:
    """Rank ``r``'s contiguous part of a global batch of ``n`` (sizes differ by at most one)."""
    r = rank() if r is None else r
    w = world_size() if w is None else w
    return slice(n * r // w, n * (r + 1) // w)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; its gradient is the sum of the ranks' gradients (every rank used the sum)."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        g = g.clone()
        dist.all_reduce(g)
        return g


class _GatherBatch(torch.autograd.Function):
    """The global batch's rows from every rank's slice; backward: (world size) x this slice's gradient."""

    @staticmethod
    def forward(ctx, local: torch.Tensor, n: int) -> torch.Tensor:
        w = world_size()
        parts = [shard(n, r, w) for r in range(w)]
        rows = max(p.stop - p.start for p in parts)
        buf = local.new_zeros((rows, *local.shape[1:]))
        buf[: len(local)] = local
        bufs = [torch.empty_like(buf) for _ in range(w)]
        dist.all_gather(bufs, buf)
        ctx.part, ctx.w = shard(n), w
        return torch.cat([b[: p.stop - p.start] for b, p in zip(bufs, parts)])

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        # every rank computed the same loss of the same gathered logits, so g is the same on every
        # rank; average_gradients divides the sum of the ranks' parameter gradients by w
        return g[ctx.part] * ctx.w, None


def _synced_batchnorm_forward(self: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """``self``'s forward with the batch statistics of the global batch (SyncBatchNorm's arithmetic)."""
    use_batch = self.training or self.running_mean is None
    if not use_batch or not dist.is_initialized():
        return type(self).forward(self, x)
    self._check_input_dim(x)
    dims = [0, *range(2, x.dim())]
    shape = [1, -1] + [1] * (x.dim() - 2)
    xf = x.to(torch.promote_types(x.dtype, torch.float32))  # statistics in float32 at least, as batch_norm
    c = x.shape[1]
    count = _AllReduceSum.apply(torch.tensor([x.numel() / max(c, 1)], dtype=xf.dtype, device=x.device))
    mean = _AllReduceSum.apply(xf.sum(dims)) / count
    xc = xf - mean.view(shape)
    var = _AllReduceSum.apply((xc * xc).sum(dims)) / count  # biased, as batch norm normalises
    out = xc * torch.rsqrt(var + self.eps).view(shape)
    if self.affine:
        out = out * self.weight.view(shape) + self.bias.view(shape)
    if self.training and self.track_running_stats and self.running_mean is not None:
        factor = self.momentum
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        with torch.no_grad():
            n = float(count)
            unbiased = var * (n / max(n - 1, 1))
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
            self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
    return out.to(x.dtype)


class DataParallel(nn.Module):
    """``module`` run on this rank's slice of each batch; returns the whole batch's outputs (see the
    module docstring). Train/eval mode, parameters and state dict are ``module``'s."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x[shard(len(x))])
        if out.dtype not in (torch.float32, torch.float64):  # bf16 under autocast: gather in float32 (gloo)
            out = out.float()
        return _GatherBatch.apply(out, len(x))


def wrap(model: nn.Module) -> nn.Module:
    """``model`` itself in one process; under torchrun a ``DataParallel`` around it, with every rank
    starting from rank 0's parameters and buffers and BatchNorm synced across ranks."""
    if world_size() <= 1:
        return model
    setup()
    for t in [*model.parameters(), *model.buffers()]:
        dist.broadcast(t.data, 0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and "forward" not in vars(m):
            m.forward = types.MethodType(_synced_batchnorm_forward, m)
    return DataParallel(model)


def average_gradients(params) -> None:
    """All-reduce and average the gradients of ``params`` over ranks (one flat buffer); no-op in one
    process. A parameter no rank computed a gradient for keeps ``grad = None``, as in one process
    (so the optimiser skips it: no weight decay, no momentum step)."""
    if world_size() <= 1:
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    like = next((p.grad for p in params if p.grad is not None), params[0])
    used = torch.tensor([p.grad is not None for p in params], dtype=like.dtype, device=like.device)
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params] + [used])
    dist.all_reduce(flat)
    flat /= world_size()
    i = 0
    for p, anyone in zip(params, (flat[-len(params):] > 0).tolist()):
        k = p.numel()
        if anyone:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.copy_(flat[i: i + k].view_as(p.grad))
        i += k
