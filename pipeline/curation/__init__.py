"""Dataset curation: the exact, fast ROUGE-L near-duplicate filter and the assembly of a
training snapshot from pairs (document split, contamination check, formats, dataset card)."""
