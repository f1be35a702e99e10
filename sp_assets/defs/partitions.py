"""The category partitions, one per category of the active policy (``SP_POLICY``)."""

from __future__ import annotations

from dagster import StaticPartitionsDefinition

from sp_assets.core.policy import load_active_policy

ACTIVE_POLICY = load_active_policy()
category_partitions = StaticPartitionsDefinition(ACTIVE_POLICY.slugs)
