"""The synthesizer: chunks of text in, instruction/input/output pairs out, from any LLM
provider (or none: reading-comprehension mining)."""
