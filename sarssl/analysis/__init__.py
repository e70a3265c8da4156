"""Analysis: attention maps, probes and embeddings."""
