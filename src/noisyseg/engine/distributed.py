"""torch.distributed glue: one process per device (gloo on CPU, nccl on GPU), device selection and the
CPU thread count of a run (:func:`torch_threads`).

The processes are started by :func:`run_processes` (``noisyseg train --nproc N``) or by torchrun.
Without their environment (WORLD_SIZE unset or 1) everything here is a no-op and the same code runs as a
single process.

Errors under several processes: a :class:`NoisysegError` that every rank reaches at an agreement point
(:func:`raise_if_any_failed`) is raised on every rank, and only rank 0 prints it (the others raise it
``silent``); an error on one rank alone is printed by that rank, and :func:`run_processes` stops the
others, so a user sees each error once and exit code 2.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

import torch
import torch.distributed as dist

from noisyseg.config import DEVICE_PATTERN
from noisyseg.errors import NoisysegError

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def select_device(spec: str, what: str = "--device", local_rank: int | None = None) -> torch.device:
    """The torch device named by ``spec``: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".

    ``what`` names the setting in error messages (``--device``, ``train.device``). ``local_rank``, under
    several processes, picks each process's own GPU instead of N. Raises :class:`NoisysegError` for an
    unknown name, CUDA asked for on a machine without it, or a GPU index the machine does not have.
    """
    if not isinstance(spec, str) or not DEVICE_PATTERN.fullmatch(spec):
        raise NoisysegError(f"{what}={spec}: unknown device; expected auto, cpu, cuda or cuda:N")
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise NoisysegError(f"{what}={spec}: CUDA is not available on this machine; use cpu or auto")
    if local_rank is not None:
        index = local_rank
    else:
        index = int(spec.split(":")[1]) if ":" in spec else torch.cuda.current_device()
    count = torch.cuda.device_count()
    if index >= count:
        raise NoisysegError(f"{what}={spec}: GPU {index} asked for, this machine has {count} (cuda:0..cuda:{count - 1})")
    return torch.device("cuda", index)


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` torch CPU threads (None: the current count), then restore the count it
    found: ``torch.set_num_threads`` is process-wide, and a caller left with more threads than free cores
    gets CPU kernels several times slower."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def init_distributed(device_spec: str) -> tuple[DistInfo, torch.device]:
    """Join the process group of the launcher (if any) and pick this process's device (``train.device``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    try:
        device = select_device(device_spec, "train.device", local_rank=local if world > 1 else None)
    except NoisysegError as e:  # every process finds the same; one prints it
        e.silent = rank != 0
        raise
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local), device


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj``, in rank order (just ``[obj]`` in a single process)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def gather_to_main(obj: Any, info: DistInfo) -> list[Any] | None:
    """Every rank's ``obj`` in rank order on rank 0, None on the others (``[obj]`` in a single process):
    for results only rank 0 goes on with, which the other ranks then need not hold."""
    if not info.enabled:
        return [obj]
    out: list[Any] | None = [None] * info.world_size if info.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def all_ranks_true(flag: torch.Tensor | bool, info: DistInfo, device: torch.device) -> bool:
    """Whether ``flag`` holds on every rank (one all-reduce under several processes)."""
    if not info.enabled:
        return bool(flag)
    t = torch.as_tensor(flag, dtype=torch.float32, device=device).reshape(1).clone()
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0)


def raise_if_any_failed(error: NoisysegError | None, info: DistInfo) -> None:
    """An agreement point: if any rank brings an error, every rank raises the first one (by rank).

    Rank 0 raises it as is; the other ranks raise it with ``silent = True`` so that the command line
    prints it once.
    """
    messages = all_gather_objects(str(error) if error is not None else None, info)
    first = next((m for m in messages if m is not None), None)
    if first is None:
        return
    if info.is_main and error is not None and str(error) == first:
        raise error
    agreed = NoisysegError(first)
    agreed.silent = not info.is_main
    raise agreed


def on_every_rank(fn: Callable[[], T], info: DistInfo) -> T:
    """``fn()``, with any :class:`NoisysegError` it raises on one rank raised on all (see above).

    Any other exception (a bug) is still announced to the other ranks, which stop with a one-line error
    naming it instead of waiting for this rank forever; this rank re-raises the original, traceback and all.
    """
    try:
        result = fn()
    except NoisysegError as e:
        raise_if_any_failed(e, info)
        raise  # unreachable: raise_if_any_failed always raises when given an error
    except Exception as e:
        with contextlib.suppress(NoisysegError):
            raise_if_any_failed(NoisysegError(f"process {info.rank} failed: {type(e).__name__}: {e}"), info)
        raise
    raise_if_any_failed(None, info)
    return result


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        # Meet before tearing down: a rank that destroys its group and exits while another still holds
        # a connection to it can make that one abort ("terminate called without an active exception").
        # Bounded, since after an error a peer may be gone; the launcher stops what is left.
        with contextlib.suppress(Exception):
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=5))
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------------ launching


def run_processes(nproc: int, command: list[str], grace_seconds: float = 10.0) -> int:
    """Run ``command`` as ``nproc`` cooperating processes on this machine; return one exit code.

    Each process gets torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT;
    OMP_NUM_THREADS=1 unless set), with the rendezvous store held here, on a port the OS picked, so no
    other program can take the port in between.
    The processes share this terminal. When one fails, the others get ``grace_seconds`` to stop on their
    own (an error every rank agreed on) and are then terminated (they may wait forever for the failed one).

    Returns 0 when all succeed, else the first failure's code: 2 for a reported error, 130 after Ctrl-C;
    a process killed by a signal is reported in one line and gives 2.
    """
    store = dist.TCPStore("127.0.0.1", 0, nproc, is_master=True, wait_for_workers=False)
    # as torchrun: one OpenMP thread per process unless asked otherwise (N processes share the cores)
    base = {"OMP_NUM_THREADS": "1", **os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(store.port), "WORLD_SIZE": str(nproc),
            "LOCAL_WORLD_SIZE": str(nproc), "GROUP_RANK": "0", "TORCHELASTIC_USE_AGENT_STORE": "True"}
    procs = [subprocess.Popen(command, env={**base, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(nproc)]
    first_failure: tuple[int, int] | None = None  # (rank, exit code)
    failed_at = 0.0
    try:
        while True:
            codes = [p.poll() for p in procs]
            if first_failure is None:
                bad = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
                if bad:
                    first_failure, failed_at = bad[0], time.monotonic()
            if all(c is not None for c in codes):
                break
            if first_failure is not None and time.monotonic() - failed_at > grace_seconds:
                _stop(procs)
                break
            time.sleep(0.05)
    except KeyboardInterrupt:  # the terminal sent SIGINT to the whole group: the processes stop themselves
        _stop(procs, wait=grace_seconds)
        return 130
    finally:
        del store
    if first_failure is None:
        return 0
    rank, code = first_failure
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        print(f"noisyseg: process {rank} of {nproc} was killed by {name}; the others were stopped", file=sys.stderr)
        return 2
    return code


def _stop(procs: list[subprocess.Popen], wait: float = 5.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + wait
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
