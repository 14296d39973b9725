"""The stream cache: exact and semantic hits, replayed as a stream (see ``service``).

Importing this package loads no model and no numpy: the embedding model loads on the first
semantic request (or at start-up with ``cache.preload``).
"""
