"""Distillery's shared runtime: messages, topics, the worker loop, blob store, embedded stack, CLI."""
