"""torch.compile for the hot paths: the methods marked ``@compiled`` become one graph each.

An update runs thousands of small ops (the 64-step RSSM filter, the 15-step imagination, five MLP
heads with two-hot losses); eagerly, each op is a separate kernel launch and a trip through memory.
Compiled, each marked method is one graph whose elementwise work inductor fuses into a few C++
(CPU) or Triton (CUDA) kernels. The units are steps or short blocks of steps, not whole loops:
the world-model loss with its 64-step filter unrolled compiles for about five minutes on two
cores; one imagination step or a block of 8 filter steps compiles in seconds and runs as fast.

Marking is static (``@compiled`` on the method), switching on is per instance
(:func:`compile_marked`), so an agent built for evaluation or pickled by MLflow runs eagerly and
nothing compiled is ever stored in a module's state. Inside a compiled graph, calls to other marked
methods are traced inline (``torch.compiler.is_compiling``), so graphs nest without breaks.
"""

from __future__ import annotations

import functools
import os
import shutil
import weakref
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .errors import CompileError

# module instance → {method name: its compiled version}; weak, so modules are never kept alive.
_COMPILED: weakref.WeakKeyDictionary[nn.Module, dict[str, Callable]] = weakref.WeakKeyDictionary()


def compiled(
    method: Callable | None = None, *, cuda_graphs: bool = False, cpp_wrapper: bool = False
):
    """Mark a method of an ``nn.Module`` to be compiled by :func:`compile_marked`.

    For a static-shaped step without autograd that is launch-bound (the policy step at batch 1):
    ``cuda_graphs=True``: on CUDA, capture the graph as a CUDA graph (inductor's
    ``reduce-overhead`` mode); ``cpp_wrapper=True``: on CPU, have inductor write the code that
    calls the graph's kernels in C++ instead of Python (its ``cpp_wrapper``). For the policy step
    that is 0.33 → 0.26 ms on a Zen 4; for the update's graphs it gave nothing and compiles longer
    (``benchmarks/throughput.py --variants pywrapper-float32 compiled-float32 cppwrapper-float32``).
    """
    if method is None:
        return functools.partial(compiled, cuda_graphs=cuda_graphs, cpp_wrapper=cpp_wrapper)
    name = method.__name__

    @functools.wraps(method)
    def dispatch(self, *args, **kwargs):
        if not torch.compiler.is_compiling():
            fast = _COMPILED.get(self, {}).get(name)
            if fast is not None:
                return fast(self, *args, **kwargs)
        return method(self, *args, **kwargs)

    dispatch.compiled_method = method
    dispatch.cuda_graphs = cuda_graphs
    dispatch.cpp_wrapper = cpp_wrapper
    return dispatch


def compile_marked(root: nn.Module, device: torch.device) -> list[str]:
    """Compile every ``@compiled`` method of ``root`` and its submodules (lazily, on first call).

    Graphs are static-shaped and must be whole (``fullgraph``: a graph break is an error, not a
    silent slowdown). Returns the compiled names, e.g. ``["world_model.rssm.observe_block", ...]``.
    """
    names = []
    for prefix, module in root.named_modules():
        marked = {}
        for klass in reversed(type(module).__mro__):
            for name, attr in vars(klass).items():
                if hasattr(attr, "compiled_method"):
                    marked[name] = attr
        if not marked:
            continue
        _COMPILED[module] = {  # unbound: a compiled function must not keep its module alive
            name: torch.compile(
                mark.compiled_method, fullgraph=True, dynamic=False, **_lever(mark, device)
            )
            for name, mark in marked.items()
        }
        names += [f"{prefix}.{name}" if prefix else name for name in marked]
    return names


def _lever(mark: Callable, device: torch.device) -> dict:
    """torch.compile's ``mode`` or ``options`` for a marked method on ``device`` (one or none)."""
    if mark.cuda_graphs and device.type == "cuda":
        return {"mode": "reduce-overhead"}
    if mark.cpp_wrapper and device.type == "cpu":
        return {"options": {"cpp_wrapper": True}}
    return {}


def is_compiled(module: nn.Module) -> bool:
    return module in _COMPILED


def check_compiler(device: torch.device) -> None:
    """Fail fast when torch.compile cannot work here: on CPU inductor needs a C++ compiler."""
    if device.type == "cpu":
        compiler = os.environ.get("CXX", "g++")
        if shutil.which(compiler) is None and shutil.which("clang++") is None:
            raise CompileError(
                f"compile: true needs a C++ compiler for torch.compile on CPU "
                f"({compiler!r} not found); install g++ or set compile: false"
            )


def use_cache_dir(folder: str | Path) -> Path:
    """Keep inductor's compiled kernels (and its FX/AOT graph caches) in ``folder``, so a later
    process with the same graphs reuses them instead of compiling again. Call before compiling.

    The kernels go to a subfolder named after the vector ISA inductor picks here (``isa-avx2``,
    ``isa-avx512-avx512_vnni``, …): inductor's graph cache is keyed by the graph, not by the CPU,
    and C++ tiled for AVX-512 (16 floats a vector) built for an AVX2 CPU (8) computes garbage. A
    repository on a file system shared by machines of both kinds would otherwise mix them (seen
    with ``ATEN_CPU_CAPABILITY=avx2`` on an AVX-512 cache: an index out of bounds in a kernel).
    Returns the subfolder.
    """
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    isa = pick_vec_isa()
    folder = Path(folder).resolve() / ("isa-" + "-".join(str(isa).split()) if isa else "isa-none")
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    return folder
