"""How slimkit shows things: one place for numbers, ratios, ids, HTML and drawings.

The CLI (``slimkit.core.cli``), the notebook reprs and the JupyterLab panel all format through
here, so a run reads the same on every screen: the same digits for a number, the same ``x0.512``
for a change, ``-`` for a missing value and a blank change for an unchanged one.

Layering, and why the catalogue may call some of it. :mod:`format`, :mod:`html` and :mod:`svg`
are *leaves*: pure functions of plain values and duck-typed records (anything with the
attributes of a ``ModelEntry``, ``StepEntry``, ``RunResult``...), importing nothing of slimkit
but each other. That is what lets the catalogue's entries keep their ``_repr_html_`` (they
display themselves in any notebook, no extension loaded, no registration step) while the
catalogue still depends on nothing above it: its arrows into this package point down, to leaves.
:mod:`lineage` is the one module here above the catalogue: the :class:`~lineage.Lineage` view
reads a catalogue, and the Mermaid and Graphviz texts of a lineage are drawn from it.
``tests/test_import_graph.py`` holds both facts (the leaves stay leaves; the catalogue imports
nothing else of slimkit). This ``__init__`` imports nothing, so importing a leaf runs no more.
"""
