"""Deliberate crashes at named points, for the fault-injection tests and benchmark.

``DREAMER_FAULT=checkpoint.state:2`` makes this process SIGKILL itself the second time it passes
``fault_point("checkpoint.state")`` (``:N`` omitted: the first time). Unset, a point costs one
environment lookup; points sit only where a kill is worth proving survivable (inside a checkpoint
write, between training and its outputs, before a model upload), never in a hot loop. A timer
can rarely hit those few milliseconds on purpose; ``benchmarks/fault_injection.py`` also kills at
random moments from outside.

``:stop`` after the count pauses the process there instead (SIGSTOP, until a SIGCONT), so a test
can act at an exact moment of a run (``tests/test_tracking.py`` stops a tracking server between
two checkpoints); several entries are separated by commas:
``DREAMER_FAULT=checkpoint.linked:1:stop,checkpoint.linked:2:stop``.

Before dying a point writes ``KILLED_MARKER`` and its name to stderr: how a SIGKILLed stage shows in
DVC's log depends on the shell DVC runs it with (``exited with -9`` when the shell execs the
command, ``exited with 137`` when it forks), so the tests and the benchmark look for the marker.
"""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter

ENV_VAR = "DREAMER_FAULT"
KILLED_MARKER = "fault point reached, SIGKILL:"
_passed: Counter[str] = Counter()


def _entries(spec: str) -> list[tuple[str, int, str]]:
    """``point[:N][:stop]`` entries, comma-separated, as ``(point, N, action)``."""
    entries = []
    for entry in filter(None, spec.split(",")):
        point, _, rest = entry.partition(":")
        count, _, action = rest.partition(":")
        entries.append((point, int(count or 1), action or "kill"))
    return entries


def fault_point(name: str) -> None:
    """SIGKILL (or with ``:stop`` SIGSTOP) this process here if ``$DREAMER_FAULT`` names this
    point and its count is due."""
    spec = os.environ.get(ENV_VAR)
    if not spec:
        return
    due = [e for e in _entries(spec) if e[0] == name]
    if not due:
        return
    _passed[name] += 1
    for point, count, action in due:
        if count != _passed[name]:
            continue
        if action == "stop":
            os.kill(os.getpid(), signal.SIGSTOP)
        else:
            print(f"{KILLED_MARKER} {point}:{count}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
