"""The code location: the seven stages, the schedule and the resources (see ``defs/``)."""

from dagster import Definitions, in_process_executor

from sp_assets.defs import STAGES
from sp_assets.defs.cli_hints import answer_partition_errors
from sp_assets.defs.resources import default_resources
from sp_assets.defs.schedules import all_categories_job, weekly_all_categories

# In-process execution keeps loaded models in one process across stages (each loads once per run);
# the multiprocess executor would start a process, and load the models again, for every step.
defs = Definitions(assets=STAGES, jobs=[all_categories_job], schedules=[weekly_all_categories],
                   resources=default_resources(), executor=in_process_executor)

# Inside `dagster asset materialize`, a missing or unknown category gets the categories and the command
# to run instead of a traceback (a no-op in every other process).
answer_partition_errors()
