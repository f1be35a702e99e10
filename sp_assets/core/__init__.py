"""Pure logic, no Dagster and no database: policies, verification rules, splits, guard evaluation, the probe, figures."""
