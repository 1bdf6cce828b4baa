"""Garbage collection of a store shared by several catalogues.

A catalogue sees only its own rows, so the store keeps who refers to what: one marker per
(model, catalogue). This catalogue's gc (1) writes its markers for the stored models it has
rows for and drops its markers for the ones it no longer has, (2) removes a stored model only
when no marker of any catalogue is left and it was published longer than the grace period ago,
and (3) removes uploads and incoming folders that stayed incomplete longer than the grace period.
A run writes its marker before it publishes, and removal retires a model first and checks the
markers again, so a model being published again meanwhile is put back, not lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from slimkit.core.artifact_store import catalogue_token, store_of
from slimkit.core.artifact_store.manifest import id_hex
from slimkit.core.failures import mask_secrets

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.catalogue import Catalogue

#: Default age before an unreferenced or incomplete artifact may go: longer than any publish.
GRACE_S = 3600.0


@dataclass
class StoreGcReport:
    store: str
    removed: list[str] = field(default_factory=list)   # model ids (hex) removed
    incomplete: list[str] = field(default_factory=list)  # uploads / incoming folders removed
    kept: int = 0
    young: int = 0  # unreferenced but within the grace period


def collect_store_garbage(cat: "Catalogue", *, grace_s: float = GRACE_S, dry_run: bool = False) -> StoreGcReport:
    store = store_of(cat)
    report = StoreGcReport(store.url)
    token = catalogue_token(cat)
    mine = {id_hex(model.id) for model in cat.models()}
    stored = store.ids()
    for hex_id in sorted(set(stored) | set(store.referenced_ids())):
        marked = store.refs(hex_id)
        if dry_run:
            continue
        if hex_id in mine and token not in marked and hex_id in stored:
            store.add_ref(hex_id, token, mask_secrets(cat.url))
        elif hex_id not in mine and token in marked:
            store.drop_ref(hex_id, token)
    for hex_id in stored:
        holders = set(store.refs(hex_id))
        if dry_run:  # as it would be after this catalogue's markers are brought up to date
            holders = (holders | {token}) if hex_id in mine else (holders - {token})
        if holders:
            report.kept += 1
        elif store.age_s(hex_id) <= grace_s:
            report.young += 1
        elif dry_run or store.remove(hex_id):
            report.removed.append(hex_id)
        else:
            report.kept += 1
    for name in store.stale_incoming(grace_s):
        report.incomplete.append(name)
        if not dry_run:
            store.remove_incoming(name)
    return report
