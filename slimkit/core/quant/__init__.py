"""Quantized weights: integer grids and packing, quantized modules with integer kernels, and
their storage in saved models. Quantization methods (plugins) produce these modules."""
