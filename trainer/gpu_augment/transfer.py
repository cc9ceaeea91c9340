"""Many small host tensors to the device in one copy."""

from __future__ import annotations

import torch
from torch import Tensor

_ALIGN = 8  # bytes: the largest element size packed by pack

# Where each packed tensor sits: [(name, byte offset, byte length, dtype, shape)].
Layout = list[tuple[str, int, int, torch.dtype, tuple]]


def pack(tensors: dict[str, Tensor], pin: bool = False) -> tuple[Tensor, Layout]:
    """Host tensors -> one uint8 buffer (pinned if asked) and its layout
    [(name, byte offset, byte length, dtype, shape)]; each tensor starts on an
    8-byte boundary, so that it can be viewed back as its dtype."""
    layout, offset = [], 0
    for name, tensor in tensors.items():
        offset = -(-offset // _ALIGN) * _ALIGN
        nbytes = tensor.numel() * tensor.element_size()
        layout.append((name, offset, nbytes, tensor.dtype, tuple(tensor.shape)))
        offset += nbytes
    # zeros: the padding between tensors is part of the buffer too (plans compare byte for byte)
    buffer = torch.zeros(max(offset, 1), dtype=torch.uint8, pin_memory=pin)
    for (_, start, nbytes, dtype, _), tensor in zip(layout, tensors.values()):
        buffer[start : start + nbytes].view(dtype).copy_(tensor.reshape(-1))
    return buffer, layout


def unpack(buffer: Tensor, layout: Layout) -> dict[str, Tensor]:
    """The tensors of a pack layout, as views of ``buffer`` (wherever it lives)."""
    return {name: buffer[start : start + nbytes].view(dtype).view(shape)
            for name, start, nbytes, dtype, shape in layout}


def send(buffer: Tensor, device: torch.device | str) -> Tensor:
    """``buffer`` on ``device`` in one copy that the host does not wait for: a
    CPU buffer bound for a GPU is pinned first (unless it is), and the caching
    host allocator keeps it until the copy is done. Already there: as it is."""
    device = torch.device(device)
    if buffer.device == device:
        return buffer
    if device.type == "cuda" and buffer.device.type == "cpu" and not buffer.is_pinned():
        buffer = buffer.pin_memory()
    return buffer.to(device, non_blocking=True)


def to_device(tensors: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """The host tensors' copies on ``device`` (same names, shapes, dtypes), moved
    in one copy: packed into one byte buffer, sent (``send``), and viewed back
    on the device (views cost no kernel). On the CPU the tensors are returned
    as they are."""
    if device.type == "cpu":
        return dict(tensors)
    buffer, layout = pack(tensors, pin=device.type == "cuda")
    return unpack(send(buffer, device), layout)
