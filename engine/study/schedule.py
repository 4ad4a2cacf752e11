"""How a study's missing runs are spread over its training processes: stack costs, the order the stacks train in,
the makespan of that order, and how many processes to use.

A stack's cost is modelled as epochs x training samples x (K + 2): the 2 stands for the per-step overhead that
stacking shares, so halving a stack costs something. Stacks are trained longest first by processes pulling from one
queue, so a schedule's makespan is that of longest-first onto the least loaded process.
"""
from __future__ import annotations

import os

from engine.config import RunConfig
from engine.train import group_into_stacks


def default_workers() -> int:
    """Training processes when none are asked for: one per CPU core."""
    return os.cpu_count() or 1


def stack_cost(stack: list[RunConfig]) -> float:
    """Relative cost used to balance stacks across processes: epochs x training samples x runs."""
    from engine.tasks import load_task_data
    c = stack[0]
    try:
        n = len(load_task_data(c).train)
    except Exception:  # data that cannot load fails in training with a proper message; order it anywhere
        n = 1
    return float(c.epochs * n * len(stack))


def makespan(costs: list[float], workers: int) -> float:
    """Finishing time of the costs taken longest first, each by the least loaded of ``workers`` processes."""
    loads = [0.0] * max(1, workers)
    for c in sorted(costs, reverse=True):
        loads[loads.index(min(loads))] += c
    return max(loads)


def order_stacks(configs: list[RunConfig], workers: int, max_stack: int = 64) -> list[list[RunConfig]]:
    """Stacks of the missing runs, longest first, for ``workers`` processes pulling from one queue.

    The largest stack is halved while that shortens the longest-first schedule noticeably (e.g. 3 stacks of 16 on
    2 processes become 16, 16, 8, 8: both processes get the same work).
    """
    stacks = group_into_stacks(configs, max_stack)
    if workers > 1 and stacks:
        def cost(stack):
            return stack_cost(stack) / len(stack) * (len(stack) + 2)
        for _ in range(4 * workers):
            stacks.sort(key=cost, reverse=True)
            big = stacks[0]
            if len(big) < 2:
                break
            half = (len(big) + 1) // 2
            trial = [big[:half], big[half:]] + stacks[1:]
            if makespan([cost(s) for s in trial], workers) < 0.97 * makespan([cost(s) for s in stacks], workers):
                stacks = trial
            else:
                break
    return sorted(stacks, key=stack_cost, reverse=True)
