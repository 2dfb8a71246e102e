# pyright: reportMissingImports=false
"""llm-serving's CrossGuard policy pack: `pulumi preview --policy-pack policy/` runs it (every policy
mandatory). The pack reads the stack's limits from stacks/Pulumi.<stack>.yaml and prices from the GPU
catalog, so the repository root goes on the path first."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import EnforcementLevel, PolicyPack

from policy.pack import NAME, policies

PolicyPack(name=NAME, enforcement_level=EnforcementLevel.MANDATORY, policies=policies())
