"""Waiting for a GPU: the one synchronisation helper of the package and its benchmarks."""
import sys


def synchronize(device: str = "cuda") -> None:
    """Wait for the GPU's queued work (torch and, when imported, cupy); nothing on
    CPU or before CUDA is initialised (never imports torch or cupy itself)."""
    if not str(device).startswith("cuda"):
        return
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    cupy = sys.modules.get("cupy")
    if cupy is not None:
        cupy.cuda.get_current_stream().synchronize()
