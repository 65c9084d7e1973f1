"""The device-memory layer under the TensorRT runtime, on a real GPU (skipped where there is none)."""

import importlib.util

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def _cuda_ready() -> str | None:
    if importlib.util.find_spec("cuda") is None:
        return "cuda-python is not installed (pip install 'dlforge[tensorrt]')"
    try:
        from dlforge.runtime.cuda_mem import device_info

        device_info()
    except Exception as exc:  # no driver, no device
        return f"no usable CUDA device: {exc}"
    return None


_reason = _cuda_ready()
if _reason:
    pytestmark = [pytest.mark.gpu, pytest.mark.skip(reason=_reason)]


def test_device_info_names_the_gpu():
    from dlforge.runtime.cuda_mem import device_info

    info = device_info()
    major, minor = map(int, info["compute_capability"].split("."))
    assert info["gpu"] and major >= 3 and info["memory_bytes"] > 2**30


@pytest.mark.parametrize("shape, dtype", [((64, 1, 28, 28), np.float32), ((3, 1000), np.float16), ((7,), np.int64)])
def test_round_trip_through_device_memory(shape, dtype):
    from dlforge.runtime.cuda_mem import DeviceBuffer, PinnedBuffer, Stream, copy_to_device, copy_to_host

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
    from dlforge.runtime.cuda_mem import (CudaGraph, DeviceBuffer, Event, PinnedBuffer, Stream, copy_to_device,
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
