"""Text embedding model (sentence-transformers/all-MiniLM-L6-v2, shipped by a pip package).

Light on import: `metadata` and `token_budget` need neither torch nor transformers; import
`deployments.kinds.text.encoder` (torch, tokenizers; transformers at load) only where it runs.
"""
