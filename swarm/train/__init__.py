"""Training swarm's own models: demonstrations from the scenarios' scripted policies, a byte-level
BPE tokenizer, a small MoE of a supported family, and one LoRA adapter per persona style."""
