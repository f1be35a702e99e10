"""Dagster objects only: one module per asset (stage), and the partitions, schedule, checks and resources.

``STAGES`` lists the seven assets in graph order, ``STAGE_NAMES`` their names.
"""

from sp_assets.defs.benchmark_split import benchmark_split
from sp_assets.defs.edit_instructions import edit_instructions
from sp_assets.defs.edited_images import edited_images
from sp_assets.defs.guard_metrics import guard_metrics
from sp_assets.defs.policy_labels import policy_labels
from sp_assets.defs.source_pool import source_pool
from sp_assets.defs.verified_pairs import verified_pairs

STAGES = [source_pool, policy_labels, edit_instructions, edited_images, verified_pairs, benchmark_split, guard_metrics]
STAGE_NAMES = [stage.key.to_user_string() for stage in STAGES]

__all__ = ["STAGES", "STAGE_NAMES"]
