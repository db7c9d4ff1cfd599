"""Data-parallel training over the processes `torchrun` starts: one process per GPU (or CPU slot), each with its
shard of every batch, gradients averaged across them before each optimizer update.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous; `World.from_environment()` reads them, and a run
without them is a world of one, where every function here does nothing. Backends: NCCL on GPUs, gloo on CPU.
"""

from __future__ import annotations

import datetime
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import torch
import torch.distributed as dist

from imgtrans.errors import ImgtransError

# A peer that died makes gloo fail at once (its sockets close); this bounds what no socket error reveals.
TIMEOUT = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls) -> "World":
        try:
            return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                       int(os.environ.get("LOCAL_RANK", 0)))
        except ValueError:
            raise ImgtransError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them)") from None

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """The process that tracks the run (logs, checkpoints, the model): rank 0."""
        return self.rank == 0


WORLD = World()


def start(device_type: str) -> World:
    """Join the job torchrun started (once per process); the world of one without torchrun."""
    global WORLD
    world = World.from_environment()
    if world.active and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=TIMEOUT)
    WORLD = world
    return world


PEER_LOST = "another process of the job stopped"


class PeerLost(ImgtransError):
    """An exchange with the other processes failed because one of them ended: this one stops too."""


@contextmanager
def _exchange() -> Iterator[None]:
    try:
        yield
    except (RuntimeError, dist.DistError) as exc:
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise PeerLost(f"{PEER_LOST} ({first[:200]})") from None


def stop() -> None:
    global WORLD
    if dist.is_initialized():
        dist.destroy_process_group()
    WORLD = World()


def average_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Each parameter's gradient replaced by its mean over the processes, in one collective per dtype (a
    parameter that got no gradient here counts as zero, so that every process reduces the same tensors)."""
    if not WORLD.active:
        return
    params = [p for p in parameters if p.requires_grad]
    for dtype in {p.dtype for p in params}:
        group = [p for p in params if p.dtype == dtype]
        for p in group:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in group])
        with _exchange():
            dist.all_reduce(flat)
        flat /= WORLD.size
        offset = 0
        for p in group:
            p.grad.copy_(flat[offset:offset + p.numel()].view_as(p.grad))
            offset += p.numel()


def broadcast_state(module: torch.nn.Module, buffers_only: bool = False,
                    keep: Iterable[torch.Tensor] = ()) -> None:
    """Parameters and buffers (batch-norm statistics, EMA counters) as rank 0 has them, on every process; those
    whose memory is one of `keep`'s (each process's own state, e.g. an image pool) stay as they are."""
    if not WORLD.active:
        return
    kept = {t.data_ptr() for t in keep}
    with torch.no_grad():
        for tensor in [*([] if buffers_only else module.parameters()), *module.buffers()]:
            if tensor.data_ptr() in kept:
                continue
            with _exchange():
                dist.broadcast(tensor.data, 0)


def sum_over_processes(values: torch.Tensor) -> torch.Tensor:
    if WORLD.active:
        values = values.clone()
        with _exchange():
            dist.all_reduce(values)
    return values


def any_process(flag: bool, device: torch.device) -> bool:
    """True on every process when `flag` is true on one of them (an interrupt received by some)."""
    if not WORLD.active:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    with _exchange():
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def from_main(value: Any) -> Any:
    """Rank 0's `value` (any picklable object), on every process."""
    if not WORLD.active:
        return value
    box = [value]
    with _exchange():
        dist.broadcast_object_list(box, 0)
    return box[0]


def gather_to_main(value: Any) -> list[Any] | None:
    """Every process's `value`, in rank order, on rank 0 (None elsewhere)."""
    if not WORLD.active:
        return [value]
    gathered = [None] * WORLD.size if WORLD.is_main else None
    with _exchange():
        dist.gather_object(value, gathered, dst=0)
    return gathered


def gather_tensors(tensor: torch.Tensor) -> torch.Tensor | None:
    """Every process's rows, concatenated in rank order on rank 0 (in host memory; None elsewhere); a process
    with no rows may give an empty tensor of any shape."""
    parts = gather_to_main(tensor.detach().cpu())
    return torch.cat([part for part in parts if part.numel()]) if parts is not None else None


def shard(order: list[int], batch_size: int, world: World) -> list[int]:
    """This process's part of an epoch's order: of each global batch (batch_size × processes items in a row),
    the rank-th slice of batch_size. The last, shorter global batch is padded from the start of the order to a
    multiple of the processes and split evenly, so every process takes the same number of equal steps."""
    if not world.active:
        return order
    size = batch_size * world.size
    full = len(order) // size * size
    mine = [i for start in range(0, full, size) for i in order[start + world.rank * batch_size:
                                                              start + (world.rank + 1) * batch_size]]
    rest = order[full:]
    if rest:
        share = -(-len(rest) // world.size)
        rest = (rest + order)[:share * world.size]
        mine += rest[world.rank * share:(world.rank + 1) * share]
    return mine
