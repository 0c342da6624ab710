"""GGUF files, framework-free: read the header (`reader`), turn its metadata into a ModelSpec and
a tokenizer (`metadata`), and make GGUF copies with llama.cpp's own tools (`convert`)."""
