"""The fast path: torch.compile'd hot paths, the bfloat16 precision policy, device handling.

Compiling costs seconds per graph, so one module-scoped compiled agent serves most tests; it is
built as the e2e pipeline's train stage builds it (same params, Pendulum's spec, one env), so its
kernels, kept in the session's cache (tests/helpers.py KERNEL_CACHE), serve that test too. Every
test here runs on CPU; the CUDA ones are skipped without a GPU.
"""

import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from dreamer.agent import Agent, native_bfloat16, resolve_device, resolve_precision
from dreamer.compiled import CompileError, _lever, check_compiler, compiled, is_compiled
from dreamer.config import ConfigError, load_config, override
from dreamer.envs import env_spec_of
from dreamer.replay import Batch
from dreamer.seeding import rng_state
from dreamer.world_model import State

from .conftest import make_batch, make_spec, tiny
from .helpers import COMPILED_PARAMS, REPO, set_params

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """An eager float32 agent and a compiled bfloat16 one with the same weights: the e2e
    pipeline's agent (this repository's params.yaml with COMPILED_PARAMS, Pendulum, one env)."""
    params = tmp_path_factory.mktemp("compiled") / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    set_params(params, COMPILED_PARAMS)
    cfg = load_config(params)
    spec = env_spec_of(cfg.env)
    torch.manual_seed(0)
    eager = Agent(spec, override(cfg, precision="float32", compile=False))
    fast = Agent(spec, cfg)
    fast.load_state_dict(eager.state_dict())
    before = {k: v.clone() for k, v in fast.state_dict().items()}
    rng = rng_state()
    seconds = fast.compile(num_envs=cfg.env.num_envs)
    return {
        "spec": spec,
        "eager": eager,
        "fast": fast,
        "seconds": seconds,
        "before": before,
        "rng": rng,
    }


def test_compile_changes_no_state_and_reports_its_time(pair):
    fast = pair["fast"]
    assert pair["seconds"] > 0 and is_compiled(fast.world_model.rssm)
    assert fast.gradient_steps == 0 and fast.optimizer.steps == 0
    assert not fast.optimizer.optimizer.state  # the warm-up's optimiser step was undone
    for name, value in fast.state_dict().items():
        assert torch.equal(value, pair["before"][name]), name
    after = rng_state()
    assert after == pair["rng"]
    assert all(p.grad is None for p in fast.parameters())


def test_compiled_graphs_match_eager_on_deterministic_work(pair):
    eager, fast, spec = pair["eager"], pair["fast"], pair["spec"]
    wm_e, wm_f = eager.world_model, fast.world_model
    B = 4
    state = State(
        torch.randn(B, 16), torch.nn.functional.one_hot(torch.randint(0, 4, (B, 4)), 4).float()
    )  # debug size: deter 16, 4 × 4 latents
    embed, action = torch.randn(B, wm_e.encoder.out_features), torch.rand(B, spec.action_dim)
    first = torch.tensor([True, False, False, True])
    with torch.no_grad():  # the mode (not a sample): no randomness, so compiled == eager
        a, log_a = wm_e.rssm.observe_step(state, action, embed, first, sample=False)
        b, log_b = wm_f.rssm.observe_step(state, action, embed, first, sample=False)
    assert torch.allclose(a.deter, b.deter, atol=1e-5) and torch.allclose(log_a, log_b, atol=1e-5)
    batch = make_batch(spec, B, fast.cfg.training.batch_length)  # the trained windows' shape
    states, posterior = wm_e.rssm.observe(wm_e.encoder(batch.obs), batch.action, batch.is_first)
    with torch.no_grad():
        total_e, terms_e = wm_e.losses(batch, states, posterior)
        total_f, terms_f = wm_f.losses(batch, states, posterior)  # float32: no autocast here
    assert torch.allclose(total_e, total_f, rtol=1e-4)
    assert terms_e.keys() == terms_f.keys()


def test_compiled_agent_trains_acts_and_pickles(pair):
    fast, spec = pair["fast"], pair["spec"]
    B, T = fast.cfg.training.batch_size, fast.cfg.training.batch_length
    before = [p.detach().clone() for p in fast.parameters()]
    for seed in range(2):  # windows shaped as compiled: (B, 1 + T) with a replay context
        update = fast.train_step(make_batch(spec, B, 1 + T, seed), fast.empty_context(B))
    assert all(np.isfinite(v) for v in update.metrics.values())
    assert sum(not torch.equal(a, b) for a, b in zip(before, fast.parameters())) > 10
    state = fast.initial_state(1)
    obs = {key: np.zeros((1, *shape), np.float32) for key, shape in spec.obs_shapes.items()}
    for first, deterministic in ((True, False), (False, True)):
        action, state = fast.act(obs, np.array([first]), state, deterministic)
        assert action.shape == (1, spec.action_dim) and np.abs(action).max() <= 1
    # Nothing compiled lives in a module's state: a pickled (or deep-copied) agent runs eagerly.
    copy = pickle.loads(pickle.dumps(fast))
    assert not is_compiled(copy.world_model.rssm)
    for a, b in zip(copy.state_dict().values(), fast.state_dict().values()):
        assert torch.equal(a, b)


def test_bfloat16_policy_multiplies_in_bf16_and_keeps_the_rest_float32():
    torch.manual_seed(0)
    spec = make_spec(vector=3, image=(16, 16, 3), action_dim=2)
    agent = Agent(spec, tiny(precision="bfloat16"))
    seen = {}

    def record(name):
        def hook(module, args, out):
            seen[name] = (args[0].dtype, out.dtype)  # returns None: the output is kept

        return hook

    wm = agent.world_model
    wm.reward_head[-1].register_forward_hook(record("linear"))
    wm.encoder.images["image"].net[0].register_forward_hook(record("conv"))
    with agent.autocast():
        total, terms, states = wm.loss(make_batch(spec))
    assert total.dtype == torch.float32 and all(v.dtype == torch.float32 for v in terms.values())
    assert states.deter.dtype == torch.float32  # the GRU state is never rounded to bf16
    assert seen["linear"] == (torch.float32, torch.float32)  # casts inside, float32 out
    assert seen["conv"][1] == torch.float32
    for p in agent.parameters():
        assert p.dtype == torch.float32  # master weights
    agent.train_step(make_batch(spec))
    for state in agent.optimizer.optimizer.state.values():
        assert all(v.dtype == torch.float32 for v in state.values() if torch.is_tensor(v))


def test_bfloat16_changes_numbers_only_slightly():
    torch.manual_seed(0)
    spec = make_spec()
    a = Agent(spec, tiny(precision="float32"))
    b = Agent(spec, tiny(precision="bfloat16"))
    b.load_state_dict(a.state_dict())
    batch = make_batch(spec)
    torch.manual_seed(1)
    loss_a = a.world_model.loss(batch)[0]
    torch.manual_seed(1)
    with b.autocast():
        loss_b = b.world_model.loss(batch)[0]
    assert loss_a.item() == pytest.approx(loss_b.item(), rel=0.02)
    assert loss_a.item() != loss_b.item()


def test_precision_and_device_resolution():
    cpu = torch.device("cpu")
    assert resolve_precision("float32", cpu) == torch.float32
    assert resolve_precision("bfloat16", cpu) == torch.bfloat16
    expected = torch.bfloat16 if native_bfloat16(cpu) else torch.float32
    assert resolve_precision("auto", cpu) == expected
    assert resolve_device("cpu") == cpu
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device: 'cuda' requested"):
            resolve_device("cuda")


def test_a_machine_without_a_compiler_is_told_in_one_line(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler")
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(CompileError, match="compile: true needs a C.. compiler.*compile: false"):
        check_compiler(torch.device("cpu"))


@pytest.mark.parametrize("capability, folder", [("avx2", "isa-avx2"), ("default", "isa-none")])
def test_kernels_of_each_vector_isa_get_their_own_cache_folder(tmp_path, capability, folder):
    """Inductor's graph cache is not keyed by the CPU: AVX-512 kernels reused on an AVX2 CPU
    compute garbage. ``ATEN_CPU_CAPABILITY`` makes inductor pick another ISA, as another CPU
    would (every CI machine has AVX2)."""
    code = (
        "import sys; from dreamer.compiled import use_cache_dir; print(use_cache_dir(sys.argv[1]))"
    )
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability}
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / folder) and (tmp_path / folder).is_dir()


def test_a_mark_picks_its_compile_lever_by_device():
    """The policy step: CUDA-graphed on a GPU, called by a C++ wrapper on a CPU; others: neither."""
    step = Agent.policy_step
    assert _lever(step, torch.device("cpu")) == {"options": {"cpp_wrapper": True}}
    assert _lever(step, torch.device("cuda")) == {"mode": "reduce-overhead"}
    plain = compiled(lambda self: None)
    assert _lever(plain, torch.device("cpu")) == _lever(plain, torch.device("cuda")) == {}


def test_compiled_marks_dispatch_per_instance():
    class Double(torch.nn.Module):
        @compiled
        def forward(self, x):
            return 2 * x

    module = Double()
    assert module(torch.ones(2)).tolist() == [2.0, 2.0]  # eager until compiled
    assert Double.forward.compiled_method.__name__ == "forward"
    assert not is_compiled(module)


def test_zero_batch_has_the_replay_layout():
    spec = make_spec(vector=3, image=(16, 16, 3), action_dim=2)
    batch = Batch.zeros(spec, 2, 5)
    assert batch.obs["image"].dtype == torch.uint8 and batch.obs["image"].shape == (2, 5, 16, 16, 3)
    assert batch.action.shape == (2, 5, 2) and batch.is_first[:, 0].all()
    assert not batch.is_first[:, 1:].any() and batch.reward.dtype == torch.float32


@cuda
def test_cuda_agent_trains_and_acts_compiled():
    spec = make_spec()
    agent = Agent(spec, override(tiny(), device="cuda", compile=True))
    assert agent.matmul_dtype == torch.bfloat16 or not torch.cuda.is_bf16_supported()
    agent.compile(num_envs=2)
    metrics = agent.train_step(make_batch(spec)).metrics
    assert all(np.isfinite(v) for v in metrics.values())
    state = agent.initial_state(2)
    for _ in range(3):  # replays of the captured policy graph carry copies, not its buffers
        action, state = agent.act(
            {"vector": np.zeros((2, 3), np.float32)}, np.array([False, False]), state
        )
    assert action.shape == (2, 2) and state.latent.deter.device.type == "cuda"


@cuda
def test_cuda_replay_batches_are_pinned_and_copied_asynchronously(rng):
    from dreamer.replay import ReplayBuffer

    spec = make_spec()
    replay = ReplayBuffer(spec, 100)
    for t in range(20):
        replay.add(
            {"vector": np.zeros(3, np.float32)}, np.zeros(2, np.float32), 0.0, t == 0, False, False
        )
    batch = replay.sample(2, 8, rng, pin_memory=True)
    assert batch.action.is_pinned()
    assert batch.to("cuda", non_blocking=True).action.device.type == "cuda"
