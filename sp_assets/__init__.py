"""SafetyPairs: counterfactual image pairs for safety, as a Dagster asset graph.

``dagster asset materialize -m sp_assets`` looks for the definitions here.
"""

from sp_assets.definitions import defs

__all__ = ["defs"]
