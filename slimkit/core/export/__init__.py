"""Exporting models to the formats serving runtimes load (GGUF, compressed-tensors, ...).

:mod:`.contract` is what an exporter plugin implements; :mod:`.run` is the one flow every export
takes (:func:`~.run.export_model`), built from :mod:`.job` (check, write, hash one export) and
:mod:`.staging` (where an export may go, and writing it whole or not at all); :mod:`.section` is a
recipe's ``export:`` section; :mod:`.lookup` finds the model an exported file came from.
"""
