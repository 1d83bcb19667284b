"""Dataset formatting, LoRA/QLoRA SFT and OpenAI fine-tuning jobs."""
