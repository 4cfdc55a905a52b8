"""Where a first run's compile goes: the default agent compiled into an empty kernel cache.

    python benchmarks/cold_compile.py              # inductor's compile workers (as training)
    python benchmarks/cold_compile.py --serial     # one process: g++ timed apart from Python
    python benchmarks/cold_compile.py --cpp-wrapper   # the lever: one C++ file per graph

``Agent.compile`` (what the train stage runs before its first update) on ``params.yaml``'s agent,
with inductor's cache in a fresh temporary folder, so every graph is traced, lowered and every
C++ kernel built with g++, as on a fresh clone. With ``--serial`` (``compile_threads`` 1) the
kernels are built in this process, so each g++ call is timed; the rest of the compile is Python
(dynamo's tracing, AOT autograd, inductor's lowering and code generation). Each build is counted
with or without a precompiled header (inductor precompiles its ``cpp_prefix.h`` for CPU
kernels; a kernel's own code is small, the header is most of a plain build). The header is
precompiled into the temporary folder as well, as on a machine that never ran inductor.
``--cpp-wrapper`` tries inductor's C++ wrapper (``torch._inductor.config.cpp_wrapper``): each
graph's Python wrapper becomes C++, built with its kernels as one file.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--serial", action="store_true", help="build kernels in this process, timed")
    p.add_argument("--cpp-wrapper", action="store_true", help="inductor's C++ wrapper (a lever)")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    args = p.parse_args(argv)
    if args.serial:  # read when inductor's config is imported: set before importing torch
        os.environ["TORCHINDUCTOR_COMPILE_THREADS"] = "1"
    import torch
    import torch._inductor.config

    from dreamer.compiled import use_cache_dir

    torch.set_num_threads(args.threads)
    torch._inductor.config.cpp_wrapper = args.cpp_wrapper
    with tempfile.TemporaryDirectory(prefix="cold-compile-") as cache:
        use_cache_dir(cache)
        _fresh_header_folder(Path(cache))
        builds, build_seconds = _count_builds()
        from dreamer.agent import Agent
        from dreamer.config import load_config
        from dreamer.envs import env_spec_of

        cfg = load_config(ROOT / "params.yaml")
        agent = Agent(env_spec_of(cfg.env), cfg)
        start = time.perf_counter()
        agent.compile()
        seconds = time.perf_counter() - start
        kernels = sum(1 for _ in Path(cache).rglob("*.so"))
    mode = "serial (compile_threads 1)" if args.serial else "compile workers (as training)"
    mode += ", C++ wrapper" if args.cpp_wrapper else ""
    print(
        f"cold compile of {cfg.model.size} ({cfg.env.id}), {mode}: {seconds:.1f} s, {kernels} .so"
    )
    for kind in sorted(builds):
        print(
            f"  g++ builds {kind:22s} {builds[kind]:4d}  {build_seconds[kind]:6.1f} s"
            f"  ({build_seconds[kind] / builds[kind]:.2f} s each)"
        )
    if args.serial:
        rest = seconds - sum(build_seconds.values())
        print(
            f"  the rest (Python: tracing, AOT autograd, lowering, code generation): {rest:.1f} s"
        )


def _fresh_header_folder(cache: Path) -> None:
    """Precompile inductor's header into ``cache`` too: it keeps it in a machine-wide folder
    (``/tmp/torchinductor_<user>/precompiled_headers``, not ``TORCHINDUCTOR_CACHE_DIR``), which a
    machine that ran torch.compile before already has, and a fresh one has not."""
    from torch._inductor import codecache

    codecache._HEADER_DIR = str(cache / "precompiled_headers")
    codecache._HEADER_LOCK_DIR = str(cache / "precompiled_headers" / "locks")


def _count_builds() -> tuple[Counter, Counter]:
    """Count and time every g++ call made in this process (all of them with ``--serial``)."""
    from torch._inductor import cpp_builder

    builds, seconds = Counter(), Counter()
    build = cpp_builder.CppBuilder.build

    def timed_build(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return build(self, *args, **kwargs)
        finally:
            option = self._build_option
            kind = (
                "header precompiled"
                if option.get_precompiling()
                else "header preprocessed"
                if option.get_preprocessing()
                else "kernel, header from .gch"
                if option.precompiled_header
                else "plain (vec ISA checks)"
            )
            builds[kind] += 1
            seconds[kind] += time.perf_counter() - start

    cpp_builder.CppBuilder.build = timed_build
    return builds, seconds


if __name__ == "__main__":
    main()
