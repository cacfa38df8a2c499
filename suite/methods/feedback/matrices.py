"""Fixed random feedback matrices: the four initialisations and their compact storage.

Every matrix is drawn once, at setup, from the method's seeded generator (`ctx.generator`), so it
is fixed across steps and reproducible from the seed. Rules (sources in brackets):

  gaussian  N(0, 1) · scale                                [Launay et al. 2019, dfatools code]
  uniform   U(−√3, √3) · scale  (same variance as gaussian) [reconstruction]
  binary    {−1, +1} · scale, stored as int8 + one scale    [BDFA, Han & Yoo 2019; the scale is a
                                                             reconstruction: the paper's is not known]
  sparse    gaussian kept on a strided pattern, ·√stride    [reconstruction of the "dilated" sparse
                                                             backward weights of Han et al. 2020]

`scale` is chosen by the caller: DFA uses 1/sqrt(dim_l · n_classes), which is Launay et al.'s
N(0,1)/sqrt(dim_max·n_classes) followed by their per-layer "feedback normalisation"
sqrt(dim_max/dim_l) (the two combine to 1/sqrt(dim_l·n_classes)). Launay slice one global matrix
per layer (`shared=True` here: point l takes the first dim_l rows of one matrix, so points of equal
size receive the identical signal B e); by default each point draws its own, with the same
per-entry distribution.

Sparse pattern (a reconstruction; the 2020 paper's dilation and groups are not available): entry
(i, j) — output unit i in flattened C·H·W order, class j — is kept iff (i + j) % stride == 0.
Along W this is a dilated (every `stride`-th position) pattern whose offset moves with the class,
so every output unit keeps feedback from n_classes/stride classes and no unit is left without a
learning signal. Kept entries are multiplied by √stride so ‖B e‖ keeps its expected size.
"""

from __future__ import annotations

import math

import torch

INITS = ("gaussian", "uniform", "binary", "sparse")


def sparse_mask(rows: int, cols: int, stride: int) -> torch.Tensor:
    i = torch.arange(rows).unsqueeze(1)
    j = torch.arange(cols).unsqueeze(0)
    return (i + j) % stride == 0


def draw(kind: str, rows: int, cols: int, gen: torch.Generator, stride: int = 2) -> torch.Tensor:
    """A (rows × cols) matrix with unit-variance entries (before the caller's scale); for `binary`
    an int8 matrix of ±1."""
    if kind == "gaussian":
        return torch.randn(rows, cols, generator=gen)
    if kind == "uniform":
        return (torch.rand(rows, cols, generator=gen) * 2 - 1) * math.sqrt(3.0)
    if kind == "binary":
        return (torch.randint(0, 2, (rows, cols), generator=gen, dtype=torch.int8) * 2 - 1).to(torch.int8)
    if kind == "sparse":
        return torch.randn(rows, cols, generator=gen) * sparse_mask(rows, cols, stride) * math.sqrt(stride)
    raise ValueError(f"unknown feedback init '{kind}'; choose one of {', '.join(INITS)}")


def xavier_bound(shape: tuple[int, ...]) -> float:
    """Xavier/Glorot-uniform bound sqrt(6/(fan_in+fan_out)) of a weight-shaped tensor, with
    PyTorch's fans (fan_in = shape[1]·kernel, fan_out = shape[0]·kernel)."""
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    return math.sqrt(6.0 / (shape[1] * receptive + shape[0] * receptive))


def xavier_uniform(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """U(−bound, bound) with the Xavier bound: BioTorch's feedback init (`init: xavier`)."""
    return (torch.rand(shape, generator=gen) * 2 - 1) * xavier_bound(shape)


class FeedbackBank(torch.nn.Module):
    """The DFA feedback of every feedback point, concatenated so that one matmul projects the
    output error to all points. Stored transposed, (n_classes × Σ dim_l), so the projection is
    one contiguous GEMM (error @ matrix).

    Float banks hold the scaled entries. Binary banks keep the ±1 entries as int8 (1 byte per
    entry instead of 4) plus one float scale per column (per output unit: 1/sqrt(dim_l·n_classes)
    of its layer); the float matrix is rebuilt from them at each projection (one pass over the
    matrix, a few MB), so the persistent storage stays compact.

    The projection is written into a workspace reused across steps: allocating ~100 MB of fresh
    memory per step (ResNet-20, batch 128, every layer a point) costs more page faults than the
    GEMM itself on CPU. The returned tensors are views of it, valid until the next projection.
    """

    def __init__(self, matrix: torch.Tensor, col_scale: torch.Tensor, shapes: list[tuple[int, ...]],
                 channels_last: list[bool]):
        super().__init__()
        self.register_buffer("matrix", matrix)  # (n_classes, Σ dim_l): float (scaled) or int8 (±1)
        self.register_buffer("col_scale", col_scale)  # (Σ dim_l,): used by int8 banks
        self.shapes = shapes
        self.channels_last = channels_last
        self.sizes = [math.prod(s) for s in shapes]
        self._workspace: torch.Tensor | None = None

    @property
    def binary(self) -> bool:
        return self.matrix.dtype == torch.int8

    def weights(self, dtype=torch.float32) -> torch.Tensor:
        if self.binary:
            return self.matrix.to(dtype) * self.col_scale.to(dtype)
        return self.matrix.to(dtype)

    def dense(self, index: int) -> torch.Tensor:
        """Feedback matrix of point `index` as float (dim_l × n_classes), rows in C·H·W order."""
        start = sum(self.sizes[:index])
        rows = self.weights()[:, start:start + self.sizes[index]].t()
        if self.channels_last[index]:  # stored in H·W·C order: put the rows back in C·H·W order
            c, h, w = self.shapes[index]
            rows = rows.reshape(h, w, c, -1).permute(2, 0, 1, 3).reshape(c * h * w, -1)
        return rows

    def _buffer(self, rows: int, like: torch.Tensor) -> torch.Tensor:
        ws = self._workspace
        if ws is None or ws.shape[0] < rows or ws.dtype != like.dtype or ws.device != like.device:
            ws = self._workspace = torch.empty(rows, self.matrix.shape[1], dtype=like.dtype, device=like.device)
        return ws[:rows]

    def project(self, error: torch.Tensor) -> list[torch.Tensor]:
        """B_l e for every point, shaped like the point (batch, *shape), in its memory format."""
        flat = torch.mm(error, self.weights(error.dtype), out=self._buffer(len(error), error))
        out = []
        for chunk, shape, cl in zip(flat.split(self.sizes, dim=1), self.shapes, self.channels_last):
            if cl:
                c, h, w = shape
                out.append(chunk.view(-1, h, w, c).permute(0, 3, 1, 2))  # channels_last strides, no copy
            else:
                out.append(chunk.view(-1, *shape))
        return out


def build_bank(shapes: list[tuple[int, ...]], channels_last: list[bool], num_classes: int, kind: str,
               gen: torch.Generator, scale: float = 1.0, stride: int = 2, shared: bool = False) -> FeedbackBank:
    """Draw one matrix per point (or, `shared`, one for all points, each taking its first dim_l
    rows) in C·H·W row order (so the draw does not depend on the memory format), then store
    channels_last points' rows in H·W·C order."""
    mats, scales = [], []
    dims = [math.prod(shape) for shape in shapes]
    common = draw(kind, max(dims), num_classes, gen, stride) if shared and dims else None
    for shape, cl, dim in zip(shapes, channels_last, dims):
        m = common[:dim] if common is not None else draw(kind, dim, num_classes, gen, stride)
        if cl:
            c, h, w = shape
            m = m.view(c, h, w, num_classes).permute(1, 2, 0, 3).reshape(dim, num_classes)
        mats.append(m)
        scales.append(torch.full((dim,), scale / math.sqrt(dim * num_classes)))
    matrix = torch.cat(mats).t() if mats else torch.zeros(num_classes, 0)
    col_scale = torch.cat(scales) if scales else torch.zeros(0)
    if kind != "binary":
        matrix = matrix * col_scale
    return FeedbackBank(matrix.contiguous(), col_scale, list(shapes), list(channels_last))
