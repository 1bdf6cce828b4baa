"""The lineage catalogue: every model, step, evaluation, export and run, in SQL, migrated safely."""

from slimkit.core.catalogue.entities import EvaluationEntry, ExportEntry, ModelEntry, RunEntry, StepEntry
from slimkit.core.catalogue.migrate import ENV_CATALOGUE, CatalogueError, default_url
from slimkit.core.catalogue.store import Catalogue

__all__ = [
    "Catalogue", "CatalogueError", "ENV_CATALOGUE", "EvaluationEntry", "ExportEntry", "ModelEntry", "RunEntry", "StepEntry",
    "default_url",
]
