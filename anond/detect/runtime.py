"""The one place ONNX Runtime sessions are created, and the provider that is really active."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import RuntimeSettings
from ..errors import ProviderUnavailable

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

# Providers that were offered by onnxruntime but failed to start in this process: not tried again,
# so a CPU-only machine logs the CUDA load failure once, not once per session.
_failed: set[str] = set()


def create_session(model: Path | bytes, runtime: RuntimeSettings) -> tuple[Any, str]:
    """An InferenceSession for `model` and the provider actually serving it.

    Providers are tried in the configured order, restricted to those this onnxruntime build has.
    With `require_gpu`, a session that did not end up on CUDA raises ProviderUnavailable:
    never a silent CPU fallback.
    """
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # errors only: no per-initializer warnings
    available = ort.get_available_providers()
    wanted = [p for p in runtime.providers if p in available and not (p in _failed and not runtime.require_gpu)]
    if runtime.require_gpu and CUDA not in wanted:
        raise ProviderUnavailable(
            f"runtime.require_gpu is set but {CUDA} is not available in this onnxruntime build "
            f"(available: {', '.join(available)})"
        )
    if not wanted:
        raise ProviderUnavailable(
            f"none of runtime.providers {runtime.providers} is available (available: {', '.join(available)})"
        )
    providers: list[Any] = [
        (p, {"device_id": runtime.cuda_device_id}) if p == CUDA else p for p in wanted
    ]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = runtime.intra_op_threads
    options.inter_op_num_threads = runtime.inter_op_threads
    options.add_session_config_entry("session.intra_op.allow_spinning",
                                     "1" if runtime.allow_spinning else "0")
    source = model if isinstance(model, bytes) else str(model)
    # A provider library that cannot load (CUDA on a machine without it) is logged by ONNX
    # Runtime itself as a multi-line error on stderr; anond reports it as one event instead
    # (runtime.provider_fallback, below), so ONNX Runtime stays silent while the session starts.
    ort.set_default_logger_severity(4)
    try:
        session = ort.InferenceSession(source, sess_options=options, providers=providers)
    except Exception as exc:  # noqa: BLE001 - ORT raises plain RuntimeError/Fail subclasses
        if runtime.require_gpu or CPU not in wanted:
            raise ProviderUnavailable(f"could not create a session on {wanted}: {exc}") from None
        session = ort.InferenceSession(source, sess_options=options, providers=[CPU])
    finally:
        ort.set_default_logger_severity(3)
    active = session.get_providers()[0]
    if wanted[0] != active:
        _failed.update(wanted[: wanted.index(active)] if active in wanted else wanted)
        from .. import log

        log.get("anond.runtime").warning("runtime.provider_fallback", wanted=wanted[0], active=active)
    if runtime.require_gpu and active != CUDA:
        raise ProviderUnavailable(
            f"runtime.require_gpu is set but {CUDA} could not be started (active: {active}); "
            "check the NVIDIA driver, CUDA and cuDNN libraries"
        )
    return session, active


def available_providers() -> list[str]:
    """Providers this onnxruntime build offers (not necessarily loadable)."""
    import onnxruntime as ort

    return list(ort.get_available_providers())
