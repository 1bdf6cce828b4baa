"""Exporting models to the formats serving runtimes load (GGUF, compressed-tensors, ...).

:mod:`.contract` is what an exporter plugin implements; :mod:`.run` is the one flow every export
takes (checks, atomic write, hash, catalogue record); :mod:`.lookup` finds the model an exported
file came from.
"""
