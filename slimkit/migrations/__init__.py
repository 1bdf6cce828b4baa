"""Alembic migrations of the lineage catalogue, shipped inside the package.

They are applied when a catalogue is opened (after a backup) and by ``slimkit db upgrade``;
see :mod:`slimkit.core.catalogue.migrate`. Revision 0001 is the only baseline: no table is ever
created any other way.
"""
