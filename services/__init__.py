"""The six services; each is `python -m services.<name>` and shares only `pipeline/`."""
