"""JupyterLab widgets for slimkit (issue 7: not built yet; importing this package gives nothing)."""
