"""Bundled low-rank factorisation methods (plain, activation-scaled and whitened SVD) and the ``densify`` step."""
