"""The code location: the seven stages, their checks, the schedule and the resources."""

from dagster import Definitions, in_process_executor

from sp_assets.defs.benchmark_split import benchmark_split
from sp_assets.defs.edit_instructions import edit_instructions
from sp_assets.defs.edited_images import edited_images
from sp_assets.defs.guard_metrics import guard_metrics
from sp_assets.defs.policy_labels import policy_labels
from sp_assets.defs.resources import default_resources
from sp_assets.defs.schedules import all_categories_job, weekly_all_categories
from sp_assets.defs.source_pool import source_pool
from sp_assets.defs.verified_pairs import verified_pairs

STAGES = [source_pool, policy_labels, edit_instructions, edited_images, verified_pairs, benchmark_split, guard_metrics]

# In-process execution keeps loaded models in one process across stages (each loads once per run);
# the multiprocess executor would start a process, and load the models again, for every step.
defs = Definitions(
    assets=STAGES,
    jobs=[all_categories_job],
    schedules=[weekly_all_categories],
    resources=default_resources(),
    executor=in_process_executor,
)
