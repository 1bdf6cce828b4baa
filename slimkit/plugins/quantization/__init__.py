"""Bundled quantization methods: RTN, GPTQ, AWQ, SmoothQuant."""
