"""Protocol adapters: KServe v1 and Open Inference Protocol v2 envelopes <-> records/outputs.

Pure functions and pydantic schemas; no HTTP framework, no torch.
"""
