"""Runtime thresholds of a compiled program, in one frozen object.

The defaults were measured on the benchmarks (docs/performance.md); they are options, not
module globals, so a test or a user can change them for one program
(``gb.compile(..., runtime=gb.RuntimeOptions(block_min_bytes=1))``) without touching the
others, and two programs with different options can coexist in one process.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class RuntimeOptions:
    """Thresholds the memory plan and code generation read.

    Attributes
    ----------
    block_min_bytes : int
        Chains of elementwise steps over arrays of at least this many bytes run block by
        block (cache blocking); smaller ones fit in cache and run whole-array. Default 4 MiB.
    block_elements : int
        Elements per block of a blocked chain (1 MiB of float32): large enough to amortise
        the per-call overhead, small enough that the scratch blocks stay in L3.
    merged_block_elements : int
        Elements per block when the last forward chain and the first backward chain run as
        one loop (more scratch blocks are live, so smaller blocks stay in L2).
    fold_max_size : int
        Largest result (elements) of an op on constants that the plan computes once
        instead of per call.
    huge_steps : int
        Schedules longer than this run as module-level chunks of ``chunk_lines`` lines
        (CPython compiles one huge function slowly and with a lot of memory).
    chunk_lines : int
        Lines per chunk of a huge schedule.
    max_plans : int
        Plans (buffers and generated code per feed-shape signature) kept per program; the
        least recently used is dropped beyond this.
    """

    block_min_bytes: int = 4 << 20
    block_elements: int = 1 << 18
    merged_block_elements: int = 1 << 16
    fold_max_size: int = 4096
    huge_steps: int = 20_000
    chunk_lines: int = 500
    max_plans: int = 8

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            least = 0 if f.name in _MAY_BE_ZERO else 1
            if not isinstance(v, int) or isinstance(v, bool) or v < least:
                raise ValueError(f"RuntimeOptions.{f.name} must be an int >= {least}, got {v!r}")


_MAY_BE_ZERO = ("block_min_bytes", "fold_max_size")


DEFAULT = RuntimeOptions()
