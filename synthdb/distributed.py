"""Work spread over processes and machines with torch.distributed (launched with ``torchrun``).

Two jobs cannot be cut into job-array shards and use this instead: Langevin (every identity is coupled to
every other each iteration; :mod:`synthdb.generate.references`) and the exact pair histograms (every pair
of a dataset; :mod:`synthdb.analysis.histogram`). Every rank loads what it needs, does its share of the
work and exchanges the rest through the collectives here; rank 0 alone reads and writes the catalog and
the output files, so the catalog has each unit once and ``runs resume`` works with any number of ranks.

What each job shares:

- Langevin: each rank owns a slice of identities (whole batches, in rank order, :meth:`Group.split`),
  runs the network passes of its slice and all-gathers (:meth:`Split.gather`) the embeddings its repulsion
  needs and the forces and latents the shared quantities (adaptive timestep, statistics) need. Batches are
  dealt whole (a rank's passes see the one-process batch shapes), every rank evaluates the repulsion over
  all rows with the others' rows detached, and every draw is the one-process draw, so on CPU a distributed
  run equals the one-process run bit for bit at the same torch thread count (torchrun sets
  ``OMP_NUM_THREADS=1``). That matters: at the reference's adaptive timestep, float noise in the latents
  grows about a hundredfold per iteration.
- Histograms: tiles of pairs are dealt to the ranks (:meth:`Group.deal`) and the integer counts summed
  (:meth:`Group.total`): integers add up exactly in any order, so the counts equal one process's.

gloo on CPU, NCCL on CUDA (``--device cuda`` becomes ``cuda:$LOCAL_RANK``). A rank that dies leaves the
others waiting in the next collective until torchrun stops them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from synthdb.errors import SynthdbError

T = TypeVar("T")


@dataclass(frozen=True)
class Group:
    """This process's place among the ranks of a run (rank 0 of 1 without torch.distributed)."""

    rank: int = 0
    size: int = 1

    @property
    def leader(self) -> bool:
        """Rank 0: the one that talks to the catalog."""
        return self.rank == 0

    def split(self, n: int, batch_size: int) -> Split:
        """Identities 0..n-1 in batches of ``batch_size``, dealt to the ranks as evenly as whole batches
        go (whole batches: each rank's passes see the one-process batch shapes)."""
        batches = -(-n // batch_size)
        if batches < self.size:
            raise SynthdbError(
                f"{n} identities in batches of {batch_size} make {batches} batch(es) for {self.size} "
                "processes: lower --batch-size or start fewer processes"
            )
        per, extra = divmod(batches, self.size)
        bounds = [min((r * per + min(r, extra)) * batch_size, n) for r in range(self.size + 1)]
        return Split(self, bounds)

    def deal(self, items: Sequence[T]) -> list[T]:
        """This rank's share of ``items``: every ``size``-th one from its rank on (neighbouring items,
        often of similar cost, go to different ranks)."""
        return list(items[self.rank :: self.size])

    def share(self, make: Callable[[], T] | None = None) -> T:
        """``make()`` run on rank 0 (the other ranks pass nothing) and its result on every rank; rank 0's
        error becomes every rank's error, so no rank waits forever for a leader that failed."""
        if self.size == 1:
            return make()  # type: ignore[misc]
        box: list[object] = [None]
        if self.leader:
            assert make is not None
            try:
                box[0] = (True, make())
            except BaseException as exc:
                dist.broadcast_object_list([(False, f"{type(exc).__name__}: {exc}")], src=0)
                raise
        dist.broadcast_object_list(box, src=0)
        ok, value = box[0]  # type: ignore[misc]
        if not ok:
            raise SynthdbError(f"rank 0 stopped ({value}): see its output")
        return value  # type: ignore[return-value]

    def total(self, counts: np.ndarray) -> np.ndarray:
        """The element-wise sum over the ranks of an int64 array, on every rank: exact in any order."""
        if self.size == 1:
            return counts
        summed = torch.from_numpy(np.ascontiguousarray(counts, dtype=np.int64))
        on = _collective_device()
        moved = summed.to(on)
        dist.all_reduce(moved, op=dist.ReduceOp.SUM)
        return moved.cpu().numpy()

    def collect(self, value: T) -> list[T]:
        """Every rank's ``value`` (a small picklable object), in rank order, on every rank."""
        if self.size == 1:
            return [value]
        out: list[object] = [None] * self.size
        dist.all_gather_object(out, value)
        return out  # type: ignore[return-value]


SOLO = Group()


def _collective_device() -> torch.device:
    """Where tensors must be for the group's collectives: the current GPU under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@dataclass(frozen=True)
class Split:
    """Row ranges of the ranks: rank r owns rows ``bounds[r]:bounds[r + 1]``."""

    group: Group
    bounds: list[int]

    @property
    def rows(self) -> slice:
        """This rank's rows."""
        return slice(self.bounds[self.group.rank], self.bounds[self.group.rank + 1])

    def gather(self, part: Tensor) -> Tensor:
        """Every rank's rows (this rank gives ``part``), concatenated in rank order: the full tensor."""
        if self.group.size == 1:
            return part
        counts = [b - a for a, b in zip(self.bounds, self.bounds[1:], strict=False)]
        padded = part.new_zeros((max(counts), *part.shape[1:]))  # all_gather wants equal shapes
        padded[: len(part)] = part
        parts = [torch.empty_like(padded) for _ in counts]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)])


@contextmanager
def joined(device: str) -> Iterator[tuple[Group, str]]:
    """(group, this rank's device) for a run: the process group already set up by the caller, else the one
    torchrun describes in ``WORLD_SIZE``/``RANK``/``MASTER_ADDR`` (created here and destroyed at the end),
    else a single process."""
    created = False
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        cuda = device.startswith("cuda")
        if cuda:
            if device == "cuda":
                device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(device)  # NCCL's collectives use the current device
        try:
            dist.init_process_group("nccl" if cuda else "gloo")
        except (RuntimeError, ValueError) as exc:
            raise SynthdbError(
                f"torch.distributed could not start ({exc}): launch with torchrun, which sets "
                "WORLD_SIZE, RANK, MASTER_ADDR and MASTER_PORT"
            ) from None
        created = True
    group = Group(dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else SOLO
    try:
        yield group, device
    finally:
        if created:
            dist.destroy_process_group()
