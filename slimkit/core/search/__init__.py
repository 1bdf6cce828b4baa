"""Sweeps and searches over recipes, with the catalogue as memory (see :mod:`.driver`)."""

from slimkit.core.search.driver import SearchEvent, SearchResult, prepare, run_search, run_sweep
from slimkit.core.search.spec import Budget, SearchError, SearchSpec, load_search
from slimkit.core.search.trials import Trial

__all__ = ["Budget", "SearchError", "SearchEvent", "SearchResult", "SearchSpec", "Trial", "load_search", "prepare",
           "run_search", "run_sweep"]
