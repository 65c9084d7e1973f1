"""Device memory for the TensorRT runtime: a small layer over cuda-python's runtime API.

Pinned host buffers (so copies are truly asynchronous), device buffers, streams, async copies,
events for device-side timing, and CUDA graph capture. Every call's error code is checked and
turned into an exception naming the call.
"""

from __future__ import annotations

import ctypes

import numpy as np

from dlforge.errors import CudaError

try:  # cuda-python >= 12.6 moved the runtime bindings here
    from cuda.bindings import runtime as cudart
except ImportError:  # older cuda-python
    from cuda import cudart


def check(result, call: str = "CUDA call"):
    """Unpack a cuda-python ``(err, *values)`` tuple, raising on a non-success code."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        _, name = cudart.cudaGetErrorName(err)
        raise CudaError(f"{call} failed: {name.decode() if isinstance(name, bytes) else name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def device_info(device: int = 0) -> dict:
    """Name, compute capability, driver and runtime versions of a CUDA device."""
    count = check(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
    if device >= count:
        raise CudaError(f"CUDA device {device} does not exist ({count} visible)")
    prop = check(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
    driver = check(cudart.cudaDriverGetVersion(), "cudaDriverGetVersion")
    runtime = check(cudart.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")
    return {
        "gpu": name.rstrip("\x00"),
        "compute_capability": f"{prop.major}.{prop.minor}",
        "cuda_driver": f"{driver // 1000}.{driver % 1000 // 10}",
        "cuda_runtime": f"{runtime // 1000}.{runtime % 1000 // 10}",
        "memory_bytes": int(prop.totalGlobalMem),
    }


class DeviceBuffer:
    """``nbytes`` of device memory."""

    def __init__(self, nbytes: int):
        self.nbytes = int(nbytes)
        self.ptr = int(check(cudart.cudaMalloc(max(self.nbytes, 1)), "cudaMalloc"))

    def free(self) -> None:
        if self.ptr:
            check(cudart.cudaFree(self.ptr), "cudaFree")
            self.ptr = 0

    def __del__(self):
        try:
            self.free()
        except Exception:  # interpreter shutdown: the driver may be gone already
            pass


class PinnedBuffer:
    """Page-locked host memory seen as a numpy array of ``shape`` and ``dtype``."""

    def __init__(self, shape: tuple[int, ...], dtype):
        self.dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(shape)) * self.dtype.itemsize
        self.ptr = int(check(cudart.cudaMallocHost(max(self.nbytes, 1)), "cudaMallocHost"))
        raw = (ctypes.c_byte * max(self.nbytes, 1)).from_address(self.ptr)
        self.array = np.frombuffer(raw, dtype=self.dtype, count=int(np.prod(shape))).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            self.array = None
            check(cudart.cudaFreeHost(self.ptr), "cudaFreeHost")
            self.ptr = 0

    def __del__(self):
        try:
            self.free()
        except Exception:
            pass


class Stream:
    def __init__(self):
        self.handle = check(cudart.cudaStreamCreate(), "cudaStreamCreate")

    @property
    def ptr(self) -> int:
        return int(self.handle)

    def synchronize(self) -> None:
        check(cudart.cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def destroy(self) -> None:
        if self.handle is not None:
            check(cudart.cudaStreamDestroy(self.handle), "cudaStreamDestroy")
            self.handle = None


def copy_to_device(dst: DeviceBuffer, src_ptr: int, nbytes: int, stream: Stream) -> None:
    check(cudart.cudaMemcpyAsync(dst.ptr, src_ptr, nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
                                 stream.handle), "cudaMemcpyAsync(host to device)")


def copy_to_host(dst_ptr: int, src: DeviceBuffer, nbytes: int, stream: Stream) -> None:
    check(cudart.cudaMemcpyAsync(dst_ptr, src.ptr, nbytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                                 stream.handle), "cudaMemcpyAsync(device to host)")


class Event:
    def __init__(self):
        self.handle = check(cudart.cudaEventCreate(), "cudaEventCreate")

    def record(self, stream: Stream) -> None:
        check(cudart.cudaEventRecord(self.handle, stream.handle), "cudaEventRecord")

    def synchronize(self) -> None:
        check(cudart.cudaEventSynchronize(self.handle), "cudaEventSynchronize")

    def elapsed_ms(self, start: Event) -> float:
        return float(check(cudart.cudaEventElapsedTime(start.handle, self.handle), "cudaEventElapsedTime"))


class CudaGraph:
    """Work captured from a stream once and replayed with one launch (less CPU launch overhead)."""

    def __init__(self, stream: Stream, work):
        check(cudart.cudaStreamBeginCapture(stream.handle, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal),
              "cudaStreamBeginCapture")
        try:
            work()
        finally:
            self.graph = check(cudart.cudaStreamEndCapture(stream.handle), "cudaStreamEndCapture")
        self.exec = check(cudart.cudaGraphInstantiate(self.graph, 0), "cudaGraphInstantiate")

    def launch(self, stream: Stream) -> None:
        check(cudart.cudaGraphLaunch(self.exec, stream.handle), "cudaGraphLaunch")
