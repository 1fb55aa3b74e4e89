"""LoRA fine-tuning of GGUF models: datasets, the trainer (a child process), its jobs, and
the adapters it writes in llama.cpp's GGUF LoRA format."""
