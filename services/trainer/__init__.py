"""The trainer: pairs → a curated snapshot → a LoRA/QLoRA adapter on `checkpoints`."""
