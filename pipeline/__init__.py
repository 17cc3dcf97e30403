"""Distillery's shared runtime: messages, topics, worker loop, blob store, embedded stack, CLI."""
