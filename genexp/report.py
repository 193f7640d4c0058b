"""What a run records about itself: metrics.json and the values behind it."""

import json
import math
import platform
from pathlib import Path
from typing import Any

from genexp.files import write_text_atomically


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Plain floats from Lightning's callback metrics (tensors and numbers)."""
    out = {}
    for key, value in metrics.items():
        value = float(value.item() if hasattr(value, "item") else value)
        out[key] = value
    return dict(sorted(out.items()))


def write_metrics(path: Path, payload: dict[str, Any]) -> None:
    """metrics.json, written atomically (genexp.files): never half-written."""
    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    payload = {k: ({mk: clean(mv) for mk, mv in v.items()} if isinstance(v, dict) else clean(v))
               for k, v in payload.items()}
    write_text_atomically(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def cpu_name() -> str:
    """The processor's model name (Linux), else what the platform module knows: for provenance."""
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.exists() else []
    return names[0] if names else platform.processor() or platform.machine()
