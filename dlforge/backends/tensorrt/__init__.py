"""TensorRT: the compiler (:mod:`.compile`), the session (:mod:`.session`) over cuda-python's device memory
(:mod:`.cuda_mem`), and the pure decisions both take (:mod:`.decisions`: profiles, precision flags,
compatibility), tested without a GPU. ``tensorrt`` itself is imported only when a build or a session runs."""

from dlforge.backends.tensorrt import compile  # noqa: F401  (registers the backend)
