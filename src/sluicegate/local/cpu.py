"""The CPU the embedded model runs on, and whether llama.cpp may repack its weights.

llama.cpp can move a model's weights at load time into "extra buffer types" laid out for the
CPU's matrix instructions (``llama_model_params.use_extra_bufts``, true by default): the AMX
buffer on CPUs with Intel AMX, and the generic repack buffer (AVX2/AVX-512 or NEON kernels)
elsewhere. llama-cpp-python compiles llama.cpp for the CPU it is built on, so on an AMX host
(Sapphire Rapids and later: ``amx_tile``, ``amx_int8``, ``amx_bf16`` in ``/proc/cpuinfo``) the
weights land in the AMX buffer, and the first decode of this model crashes the process with a
segmentation fault in ``ggml_backend_amx_mul_mat`` (llama.cpp issue #20824).

The rule (``local.repack``):

- ``auto`` (default): off when the CPU has AMX, on otherwise (llama.cpp's own default). On
  AMX hosts repacking is the crash above. Elsewhere it is safe, and it is what gives the
  interleaved kernels (AVX2/AVX-512, and ARM NEON, where llama.cpp reports large gains on
  Q4_0) to models that can use them. For the embedded Gemma 3 270M it changes little:
  ``bench/repack.py`` on an AVX2-only build measured 43.5 tokens/s on, 43.0 off (1.01x, within
  noise), TTFT 58 ms either way; the sampled text differs (other float rounding).
- ``on`` / ``off``: forced, for an operator who knows better than the rule.

``load_llama`` builds the ``Llama`` with the decision applied and checks that it was.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = ["AMX_FLAGS", "CPUInfo", "Repack", "RepackDecision", "decide_repack", "features_used",
           "load_llama", "read_cpu"]

Repack = Literal["auto", "on", "off"]

AMX_FLAGS = frozenset({"amx_tile", "amx_int8", "amx_bf16"})
"""The ``/proc/cpuinfo`` flags of Intel AMX."""

_PARAMS_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class CPUInfo:
    """What ``/proc/cpuinfo`` says of the first CPU: its model name and feature flags."""

    model: str
    flags: frozenset[str]

    @property
    def amx(self) -> frozenset[str]:
        """The AMX flags this CPU has (empty: no AMX)."""
        return self.flags & AMX_FLAGS


@dataclass(frozen=True, slots=True)
class RepackDecision:
    """``use_extra_bufts`` for llama.cpp, and why (one sentence, for logs and ``/healthz``)."""

    use_extra_bufts: bool
    reason: str


def read_cpu(path: str | Path = "/proc/cpuinfo") -> CPUInfo:
    """The first processor's ``model name`` and ``flags`` from a cpuinfo file.

    A missing or unreadable file (not Linux) gives an unknown model and no flags.
    """
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return CPUInfo("unknown", frozenset())
    model = "unknown"
    flags: frozenset[str] = frozenset()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if model != "unknown" or flags:
                break  # the end of the first processor's block
            continue
        key = key.strip()
        if key == "model name" and model == "unknown":
            model = value.strip()
        elif key in ("flags", "Features") and not flags:  # x86 / ARM spelling
            flags = frozenset(value.split())
    return CPUInfo(model, flags)


def decide_repack(setting: Repack, cpu: CPUInfo) -> RepackDecision:
    """Apply the rule of this module's docstring to ``cpu``."""
    if setting == "on":
        return RepackDecision(True, "local.repack is on")
    if setting == "off":
        return RepackDecision(False, "local.repack is off")
    if cpu.amx:
        return RepackDecision(
            False, f"auto: off, the CPU has AMX ({', '.join(sorted(cpu.amx))}), where "
                   "llama.cpp's AMX weight repacking crashes the first decode")
    return RepackDecision(True, "auto: on, the CPU has no AMX")


@contextlib.contextmanager
def _model_params(use_extra_bufts: bool) -> Iterator[None]:
    """While open, ``llama_model_default_params()`` (which ``Llama.__init__`` starts from) has
    ``use_extra_bufts`` set; llama-cpp-python has no constructor argument for it."""
    import llama_cpp

    module = llama_cpp.llama_cpp
    default = module.llama_model_default_params

    def params() -> Any:
        p = default()
        p.use_extra_bufts = use_extra_bufts
        return p

    with _PARAMS_LOCK:
        module.llama_model_default_params = params
        try:
            yield
        finally:
            module.llama_model_default_params = default


def load_llama(path: str, decision: RepackDecision, **kwargs: Any) -> Any:
    """A ``llama_cpp.Llama`` for the GGUF file at ``path`` with ``decision`` applied.

    ``kwargs`` go to ``Llama``. Raises ``RuntimeError`` when llama-cpp-python has no
    ``use_extra_bufts`` model parameter (older than 0.3.16) or did not apply it, and whatever
    ``Llama`` raises for a bad file.
    """
    import llama_cpp

    fields = {name for name, *_ in llama_cpp.llama_model_params._fields_}
    if "use_extra_bufts" not in fields:
        raise RuntimeError("this llama-cpp-python cannot turn weight repacking off "
                           "(no use_extra_bufts model parameter); upgrade it")
    with _model_params(decision.use_extra_bufts):
        llm = llama_cpp.Llama(model_path=path, **kwargs)
    if bool(llm.model_params.use_extra_bufts) != decision.use_extra_bufts:
        raise RuntimeError("llama.cpp did not take the use_extra_bufts setting")
    return llm


def features_used(decision: RepackDecision) -> list[str]:
    """The CPU features llama.cpp was built with (``llama_print_system_info``: ``AVX2``,
    ``AVX512``, ``AMX_INT8``, ``REPACK``, ...) less those only the extra buffer types use
    (``AMX_*``, ``REPACK``) when repacking is off."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode("utf-8", "replace")
    features: list[str] = []
    for item in info.split("|"):
        name, sep, value = item.partition("=")
        name = name.split(":")[-1].strip()
        if not (sep and name and value.strip() not in ("", "0")):
            continue
        if not decision.use_extra_bufts and (name.startswith("AMX") or name == "REPACK"):
            continue
        features.append(name)
    return features
