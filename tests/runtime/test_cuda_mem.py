"""The device-memory layer under the TensorRT runtime, on a real GPU (skipped where there is none)."""

import importlib.util

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

# What the CUDA runtime answers on a machine that genuinely has no GPU or no (new enough) driver.
# Any other failure of device_info() is a bug and fails the tests instead of skipping them.
NO_DEVICE_ERRORS = ("cudaErrorNoDevice", "cudaErrorInsufficientDriver")


def _cuda_python_installed() -> bool:
    # `cuda` alone may be a namespace package left by an unrelated project (cuda-pathfinder, ...):
    # look for the runtime bindings cuda_mem imports.
    for name in ("cuda.bindings", "cuda.cudart"):
        try:
            if importlib.util.find_spec(name) is not None:
                return True
        except ModuleNotFoundError:  # no `cuda` package at all
            return False
    return False


def _no_device_reason(exc: Exception) -> str | None:
    """Why ``exc`` means "no usable CUDA device here", or None when it is a real error."""
    from dlforge.backends.tensorrt.cuda_mem import CudaError

    message = str(exc)
    if isinstance(exc, CudaError):
        if any(name in message for name in NO_DEVICE_ERRORS) or "(0 visible)" in message:
            return f"no CUDA device or driver: {message}"
    elif isinstance(exc, RuntimeError) and "dlopen" in message and "libcuda" in message:
        return f"no CUDA driver (libcuda is not installed): {message}"  # cuda-python's own RuntimeError
    return None


@pytest.fixture(autouse=True, scope="module")
def _cuda_device():
    if not _cuda_python_installed():
        pytest.skip("cuda-python is not installed (pip install 'dlforge[tensorrt]')")
    from dlforge.backends.tensorrt.cuda_mem import device_info  # an import error here is a bug: let it fail

    try:
        device_info()
    except Exception as exc:
        reason = _no_device_reason(exc)
        if reason is None:
            raise
        pytest.skip(reason)


def test_device_info_names_the_gpu():
    from dlforge.backends.tensorrt.cuda_mem import device_info

    info = device_info()
    major, minor = map(int, info["compute_capability"].split("."))
    assert info["gpu"] and major >= 3 and info["memory_bytes"] > 2**30


@pytest.mark.parametrize("shape, dtype", [((64, 1, 28, 28), np.float32), ((3, 1000), np.float16), ((7,), np.int64)])
def test_round_trip_through_device_memory(shape, dtype):
    from dlforge.backends.tensorrt.cuda_mem import DeviceBuffer, PinnedBuffer, Stream, copy_to_device, copy_to_host

    rng = np.random.default_rng(0)
    src = PinnedBuffer(shape, dtype)
    src.array[...] = (rng.random(shape) * 100).astype(dtype)
    dst = PinnedBuffer(shape, dtype)
    dev = DeviceBuffer(src.nbytes)
    stream = Stream()
    copy_to_device(dev, src.ptr, src.nbytes, stream)
    copy_to_host(dst.ptr, dev, src.nbytes, stream)
    stream.synchronize()
    np.testing.assert_array_equal(src.array, dst.array)
    for b in (src, dst, dev):
        b.free()
    stream.destroy()


def test_cuda_graph_replays_captured_copies_and_events_time_them():
    from dlforge.backends.tensorrt.cuda_mem import (CudaGraph, DeviceBuffer, Event, PinnedBuffer, Stream, copy_to_device,
                                          copy_to_host)

    n = 1 << 20
    src, dst = PinnedBuffer((n,), np.float32), PinnedBuffer((n,), np.float32)
    dev = DeviceBuffer(src.nbytes)
    stream = Stream()

    def work():
        copy_to_device(dev, src.ptr, src.nbytes, stream)
        copy_to_host(dst.ptr, dev, src.nbytes, stream)

    graph = CudaGraph(stream, work)
    for value in (1.0, 2.5):  # the graph reads the buffers' *current* contents on each launch
        src.array[:] = value
        start, stop = Event(), Event()
        start.record(stream)
        graph.launch(stream)
        stop.record(stream)
        stop.synchronize()
        assert (dst.array == value).all()
        assert stop.elapsed_ms(start) > 0
