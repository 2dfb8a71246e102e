"""Kubernetes probes for vLLM 0.33.0, timed from the plan.

vLLM binds its port early but answers nothing until the engine is up (model load, profiling, torch.compile
and CUDA-graph capture), then `/health` is 200, and 503 once the engine is dead (the server exits 5 s
later). So a startup probe holds liveness off for the whole load, with a budget from the plan's cold start;
readiness and liveness then watch `/health`.
"""

from __future__ import annotations

import math
from typing import Any

from infra.sizing.plan import ServingPlan
from infra.vllm.args import SERVE_PORT

STARTUP_PERIOD_S = 10
# The probe starts once the init containers have pulled the weights, so it covers the plan's load and
# engine start, which assume warm caches; a first start on a new GPU shape also compiles and captures
# CUDA graphs (a published Llama-3.1-8B/L40S breakdown: compile 52 s, graphs 54 s, engine init 94 s
# cold), and a busy node loads slower. Budget = margin x estimate + a fixed allowance for that.
STARTUP_MARGIN = 3.0
COLD_COMPILE_ALLOWANCE_S = 600
READINESS = {"periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3}
# Liveness tolerates a long batch: three misses 30 s apart before a restart, which costs a cold start.
LIVENESS = {"periodSeconds": 30, "timeoutSeconds": 10, "failureThreshold": 3}


def startup_budget_s(plan: ServingPlan) -> int:
    """Seconds vLLM may take from container start to its first healthy answer before it is restarted."""
    budget = STARTUP_MARGIN * plan.estimated_load_s + COLD_COMPILE_ALLOWANCE_S
    return int(math.ceil(budget / STARTUP_PERIOD_S) * STARTUP_PERIOD_S)


def _health() -> dict[str, Any]:
    return {"httpGet": {"path": "/health", "port": SERVE_PORT}}


def probes(plan: ServingPlan) -> dict[str, dict[str, Any]]:
    """startupProbe, readinessProbe and livenessProbe of a vLLM container that serves HTTP."""
    return {
        "startupProbe": {
            **_health(),
            "periodSeconds": STARTUP_PERIOD_S,
            "timeoutSeconds": 5,
            "failureThreshold": startup_budget_s(plan) // STARTUP_PERIOD_S,
        },
        "readinessProbe": {**_health(), **READINESS},
        "livenessProbe": {**_health(), **LIVENESS},
    }
