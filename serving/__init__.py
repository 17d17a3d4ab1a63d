"""Online serving: an OpenAI-compatible embeddings API and vector search on the live index.

The batch pipeline keeps the tables fresh; this package answers applications in real time with
the same `gpu_ops` encoders, so a vector from the API equals the pipeline's for the same text.
"""
