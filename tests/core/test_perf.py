"""Speed settings: threads and loader workers from the job's cores, one thread per loader worker,
AdamW kernels, the compile setting and its fallback, SDPA attention in every model."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from timm.layers import set_fused_attn
from timm.models.vision_transformer import Attention
from torch.utils.data import DataLoader, Dataset

from livt_core.config import list_presets, resolve_config
from livt_core.errors import ConfigError
from livt_core.events import Callback
from livt_core.models import create_model, list_models
from livt_core.optim import create_optimizer, param_groups
from livt_core.perf import (
    AUTO_MAX_WORKERS,
    JOB_CPUS_ENV,
    CompiledStep,
    available_cpus,
    configure_threads,
    decide_compile,
    default_threads,
    loader_worker_init,
    plan_cpus,
    set_adamw_implementation,
)

REPO = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")


# -- threads -------------------------------------------------------------------------------------


def test_threads_follow_the_job_cpus_and_the_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv(JOB_CPUS_ENV, raising=False)
    assert available_cpus() == len(os.sched_getaffinity(0))
    monkeypatch.setenv(JOB_CPUS_ENV, "6")
    assert available_cpus() == 6
    assert default_threads() == 6
    assert default_threads(num_workers=2) == 4  # workers and step together: the 6 cores
    assert default_threads(num_workers=10) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun: 4 ranks share the 6 cores
    assert default_threads() == 1
    monkeypatch.setenv(JOB_CPUS_ENV, "not-a-number")
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert available_cpus() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("cpus", "local", "threads", "expected"),
    [
        # auto threads and auto workers: (threads, workers)
        (1, None, None, (1, 0)),  # one core: no loader process
        (2, None, None, (1, 1)),
        (8, None, None, (4, 4)),
        (16, None, None, (12, 4)),  # at most 4 workers; the step gets the rest
        (2, "2", None, (1, 0)),  # torchrun: 2 ranks on 2 cores, one core each
        (8, "2", None, (2, 2)),
        (8, "8", None, (1, 0)),
        # explicit threads: the workers fit the cores they leave
        (1, None, 1, (1, 0)),
        (2, None, 1, (1, 1)),
        (2, None, 2, (2, 0)),
        (8, None, 1, (1, 4)),
        (8, None, 6, (6, 2)),
        (8, "2", 3, (3, 1)),
    ],
)
def test_auto_workers_and_threads_fit_the_share(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    cpus: int,
    local: str | None,
    threads: int | None,
    expected: tuple[int, int],
) -> None:
    monkeypatch.setenv(JOB_CPUS_ENV, str(cpus))
    if local is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local)
    with caplog.at_level(logging.WARNING, logger="livt_core.perf"):
        plan = plan_cpus(threads, None)
    assert (plan.threads, plan.num_workers) == expected
    assert plan.threads + plan.num_workers <= plan.share == max(1, cpus // int(local or 1))
    assert plan.auto_workers and plan.auto_threads == (threads is None)
    assert not caplog.records


def test_auto_never_oversubscribes_any_share(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    for cpus in range(1, 65):
        monkeypatch.setenv(JOB_CPUS_ENV, str(cpus))
        for threads in {None, 1, min(2, cpus), cpus}:  # explicit threads within the share
            plan = plan_cpus(threads, None)
            assert plan.threads >= 1 and 0 <= plan.num_workers <= AUTO_MAX_WORKERS
            assert plan.threads + plan.num_workers <= cpus, (cpus, threads, plan)
            assert plan.num_workers == 0 or cpus > 1


def test_a_launchers_limit_caps_auto_loader_processes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setenv(JOB_CPUS_ENV, "16")
    assert plan_cpus(None, None).num_workers == AUTO_MAX_WORKERS
    for limit, workers in (("2", 2), ("0", 0), ("9", AUTO_MAX_WORKERS)):
        monkeypatch.setenv("LIVT_MAX_DATA_WORKERS", limit)
        plan = plan_cpus(None, None)
        assert (plan.num_workers, plan.threads) == (workers, 16 - workers)
    assert plan_cpus(None, 6).num_workers == 6  # explicit values were checked at submit
    monkeypatch.setenv("LIVT_MAX_DATA_WORKERS", "many")
    with caplog.at_level(logging.WARNING, logger="livt_core.perf"):
        assert plan_cpus(None, None).num_workers == AUTO_MAX_WORKERS
    assert "LIVT_MAX_DATA_WORKERS" in caplog.text


def test_no_preset_oversubscribes_a_share(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every preset's threads and loader processes fit every share from 1 core up (a preset
    that fixed both would make a 1-core job's processes take turns on the core)."""
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    for preset in list_presets():
        for kind in ("pretrain", "finetune", "evaluate"):
            cfg = resolve_config(kind, preset)
            for cpus in range(max(1, cfg.threads or 1), 17):
                monkeypatch.setenv(JOB_CPUS_ENV, str(cpus))
                plan = plan_cpus(cfg.threads, cfg.data.num_workers)
                assert not plan.oversubscribed, (preset, kind, cpus, plan)


def test_explicit_workers_are_respected_and_an_excess_warns_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setenv(JOB_CPUS_ENV, "4")
    with caplog.at_level(logging.WARNING, logger="livt_core.perf"):
        fits = plan_cpus(None, 3)
        both_fit = plan_cpus(2, 2)
    assert (fits.threads, fits.num_workers) == (1, 3)
    assert (both_fit.threads, both_fit.num_workers) == (2, 2)
    assert not caplog.records
    for threads, workers in ((3, 2), (None, 6), (8, 0)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="livt_core.perf"):
            plan = plan_cpus(threads, workers)
        assert plan.num_workers == workers and plan.threads == (threads or 1)
        assert [r.levelno for r in caplog.records] == [logging.WARNING]
        message = caplog.records[0].getMessage()
        assert f"threads={plan.threads}" in message and f"data.num_workers={workers}" in message
        assert "share of 4 core(s)" in message and f"{JOB_CPUS_ENV}=4" in message


class _Watch(Callback):
    """Records, at every training step, torch's threads and the loader processes alive."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []
        self.start: dict = {}

    def on_start(self, info) -> None:
        self.start = dict(info)

    def on_step(self, progress) -> None:
        self.seen.append((torch.get_num_threads(), len(multiprocessing.active_children())))


@pytest.mark.parametrize(
    ("cpus", "threads", "workers"), [("1", 1, 0), ("2", 1, 1)], ids=["one-core", "two-cores"]
)
def test_a_run_with_auto_workers_runs_the_planned_processes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cpus: str, threads: int, workers: int
) -> None:
    """A short fine-tune on the bundled Fashion-MNIST-LT with ``threads`` and
    ``data.num_workers`` left to auto: the step runs the planned threads, exactly the planned
    loader processes exist while it trains, and the result records both."""
    from livt_core.engine.run import run

    config = resolve_config(
        "finetune",
        "fashion-mnist-lt",
        {
            "threads": None,
            "data": {"num_workers": None},
            "epochs": 1,
            "warmup_epochs": 0,
            "max_steps_per_epoch": 3,
            "model_kwargs": {"depth": 1},
        },
    )
    assert config.data.num_workers is None and config.threads is None
    monkeypatch.setenv(JOB_CPUS_ENV, cpus)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    before, children = torch.get_num_threads(), len(multiprocessing.active_children())
    watch = _Watch()
    try:
        outcome = run(config, tmp_path / "run", callbacks=watch, resume=None)
    finally:
        torch.set_num_threads(before)
    assert outcome.status == "succeeded"
    assert watch.seen and set(watch.seen) == {(threads, children + workers)}
    runtime = {"threads": threads, "num_workers": workers, "cpus": int(cpus)}
    assert outcome.result["runtime"] == runtime
    assert {k: watch.start[k] for k in runtime} == runtime
    stored = json.loads((tmp_path / "run" / "results.json").read_text())
    assert stored["runtime"] == runtime
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["num_workers"] is None


def test_default_threads_never_exceed_the_affinity_mask() -> None:
    """A process pinned to one core runs one torch thread (torch's own default is the machine's
    core count: the oversubscription that collapsed a loaded 2-core step 4.3×)."""
    code = (
        "import os, torch; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "from livt_core.perf import configure_threads; "
        "print(configure_threads(None), torch.get_num_threads())"
    )
    env = {k: v for k, v in os.environ.items() if k not in (JOB_CPUS_ENV, "OMP_NUM_THREADS")}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1"]


def test_explicit_threads_win() -> None:
    before = torch.get_num_threads()
    try:
        assert configure_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


class _Threads(Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> int:
        return torch.get_num_threads()


def test_loader_workers_run_one_thread() -> None:
    loader = DataLoader(
        _Threads(),
        batch_size=1,
        num_workers=2,
        worker_init_fn=loader_worker_init,
        multiprocessing_context="fork",
    )
    assert [int(b) for b in loader] == [1, 1]


def test_a_run_sets_the_default_threads_from_the_job_cpus(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``run`` applies the default before anything else (here the run then fails on its
    checkpoint: the threads were set all the same)."""
    from livt_core.engine.run import run
    from livt_core.errors import CheckpointError

    config = resolve_config(
        "evaluate",
        "fashion-mnist-lt",
        {"checkpoint": str(tmp_path / "missing.pth"), "threads": None},
    )
    monkeypatch.setenv(JOB_CPUS_ENV, "1")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with pytest.raises(CheckpointError):
            run(config, tmp_path / "out")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# -- AdamW ---------------------------------------------------------------------------------------


def test_create_optimizer_uses_the_fused_kernel_and_updates_as_before() -> None:
    torch.manual_seed(0)
    model = create_model("vit_nano_patch4", img_size=28, in_chans=1, num_classes=10)
    reference = create_model("vit_nano_patch4", img_size=28, in_chans=1, num_classes=10)
    reference.load_state_dict(model.state_dict())
    fast = create_optimizer(
        param_groups(model, weight_decay=0.05), lr=1e-3, betas=(0.9, 0.999), device=CPU
    )
    slow = create_optimizer(param_groups(reference, weight_decay=0.05), lr=1e-3, betas=(0.9, 0.999))
    assert all(g["fused"] for g in fast.param_groups)
    assert not any(g.get("fused") for g in slow.param_groups)
    x = torch.randn(4, 1, 28, 28)
    for _ in range(3):
        for m, opt in ((model, fast), (reference, slow)):
            m(x).square().mean().backward()
            opt.step()
            opt.zero_grad()
    for (name, a), b in zip(
        model.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
    # a state saved by the old (single-tensor) optimiser loads into the fused one
    fast.load_state_dict(slow.state_dict())
    set_adamw_implementation(fast, {"fused": True})
    assert all(g["fused"] and not g["foreach"] for g in fast.param_groups)
    model(x).sum().backward()
    fast.step()


# -- compile -------------------------------------------------------------------------------------


def test_compile_decisions(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not decide_compile("off", CPU).enabled
    assert decide_compile("on", CPU).enabled  # gcc is on this machine
    auto = decide_compile("auto", CPU)
    assert not auto.enabled and "eager on CPU" in auto.reason
    with pytest.raises(ConfigError, match="compile"):
        decide_compile("sometimes", CPU)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("CXX", "no-such-compiler")
    with pytest.raises(ConfigError, match="no C\\+\\+ compiler"):
        decide_compile("on", CPU)
    assert "no C++ compiler" in decide_compile("auto", CPU).reason


def test_compile_setting_is_validated() -> None:
    config = resolve_config("finetune", "fashion-mnist-lt", {"compile": "on"})
    assert config.compile == "on"
    assert resolve_config("pretrain", "fashion-mnist-lt").compile == "auto"
    with pytest.raises(Exception, match="compile"):
        resolve_config("finetune", "fashion-mnist-lt", {"compile": "maybe"})


def test_a_failing_compile_falls_back_to_eager_with_the_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = torch.nn.Linear(3, 2)
    step = CompiledStep(model, strict=False)

    def broken(*args: object, **kwargs: object) -> None:
        from torch._dynamo.exc import BackendCompilerFailed

        raise BackendCompilerFailed(lambda *a: None, RuntimeError("cc1plus: out of memory"), None)

    step.compiled = broken
    x = torch.randn(4, 3)
    with caplog.at_level(logging.WARNING, logger="livt_core.perf"):
        out = step(x)
    torch.testing.assert_close(out, model(x))
    assert not step.active and "out of memory" in (step.fallback_reason or "")
    assert "training eagerly" in caplog.text
    strict = CompiledStep(model, strict=True)
    strict.compiled = broken
    with pytest.raises(Exception, match="out of memory"):
        strict(x)
    # an error of the model itself is not a compile failure: it propagates under auto too
    with pytest.raises(RuntimeError, match="shape"):
        CompiledStep(model, strict=False)(torch.randn(4, 5))


@pytest.mark.slow
def test_compiled_training_step_matches_eager_and_keeps_state_dict_keys() -> None:
    torch.manual_seed(0)
    model = create_model("vit_nano_patch4", img_size=28, in_chans=1, num_classes=10)
    keys = list(model.state_dict())
    step = CompiledStep(model, strict=True)
    x = torch.randn(8, 1, 28, 28)
    model.eval()
    torch.testing.assert_close(step(x), model(x), rtol=1e-4, atol=1e-4)
    assert step.active
    assert list(model.state_dict()) == keys  # timm keys, no "_orig_mod." prefix


# -- SDPA ----------------------------------------------------------------------------------------


def test_every_model_uses_sdpa_even_when_timm_is_told_otherwise() -> None:
    set_fused_attn(False)
    try:
        for name in list_models():
            patch = int(re.search(r"patch(\d+)", name).group(1))
            kwargs: dict = {"img_size": 2 * patch, "in_chans": 1, "depth": 1}
            if name.startswith("mae"):
                kwargs["decoder_depth"] = 1
            else:
                kwargs["num_classes"] = 10
            model = create_model(name, **kwargs)
            layers = [m for m in model.modules() if isinstance(m, Attention)]
            assert layers and all(m.fused_attn for m in layers), name
    finally:
        set_fused_attn(True)


def test_sdpa_attention_equals_the_explicit_softmax() -> None:
    torch.manual_seed(0)
    model = create_model("vit_nano_patch4", img_size=28, in_chans=1, num_classes=10).eval()
    x = torch.randn(2, 1, 28, 28)
    calls = []
    original = F.scaled_dot_product_attention

    def counting(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        return original(*args, **kwargs)

    F.scaled_dot_product_attention = counting
    try:
        fused = model(x)
    finally:
        F.scaled_dot_product_attention = original
    assert len(calls) == len(model.blocks)
    for m in model.modules():
        if isinstance(m, Attention):
            m.fused_attn = False
    torch.testing.assert_close(fused, model(x), rtol=1e-5, atol=1e-5)
