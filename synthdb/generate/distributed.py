"""Langevin across processes and machines with torch.distributed (launched with ``torchrun``).

Langevin couples every identity to every other each iteration, so it cannot be cut into job-array
shards. What costs is the generator + embedder pass with gradients; what couples is only the embeddings
(N x D). So each rank owns a slice of identities (whole batches, in rank order), runs the network passes
of its slice, and all-gathers the embeddings its repulsion needs and the forces and latents the shared
quantities (adaptive timestep, statistics) need. Every rank holds the same full latents after each
iteration; rank 0 alone reads and writes the catalog (run row, checkpoints, stats, final samples), so the
catalog has each unit once and ``runs resume`` works as for one process, with any number of ranks.

Batches are dealt whole (a rank's network passes see the one-process batch shapes), every rank evaluates
the repulsion over all rows with the others' rows detached (the one-process matrix shapes), and every
draw is the one-process draw (the random force of iteration t is one tensor for all identities), so on
CPU a distributed run equals the one-process run bit for bit at the same torch thread count (torchrun
sets ``OMP_NUM_THREADS=1``). That matters: at the reference's adaptive timestep, float noise in the latents
grows about a hundredfold per iteration. gloo on CPU, NCCL on CUDA (``--device cuda`` becomes
``cuda:$LOCAL_RANK``).
A rank that dies leaves the others waiting in the next collective until torchrun stops them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

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


SOLO = Group()


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
