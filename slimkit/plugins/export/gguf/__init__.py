"""The bundled ``gguf`` exporter (llama.cpp): :mod:`.plugin` registers it; :mod:`.tensors` maps slimkit's
grids to GGUF block types, :mod:`.layout` the Llama/Deci header and tensor names, :mod:`.vocab` the
tokenizer, :mod:`.plan` ties them into one list of tensors, and :mod:`.runtime` runs a written file
in real llama.cpp (``xllamacpp``) for checks and benchmarks."""
