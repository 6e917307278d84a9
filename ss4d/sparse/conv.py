"""Submanifold sparse convolutions (pure PyTorch): spatial 3x3x3, temporal (3,1,1,1) and full 3^4.

Output sites = input sites in the same order; cross-correlation `out[p] = b + sum_d W[:, d, :] @ in[p + d]`
with missing neighbours = 0; weights in the official spconv layout `[Cout, *kernel, Cin]`.

Two execution strategies, chosen per coordinate set from the fraction of active (row, kernel tap) pairs:
* "pairs" (sparse neighbourhoods, e.g. surfaces: ~50 % of 3^3 taps, ~25 % of 3^4 taps active): the centre tap is
  one dense GEMM over all rows, every other tap gathers its active input rows, multiplies by that tap's weight
  and index-adds into its output rows, so missing neighbours cost nothing;
* "im2col" (dense neighbourhoods): gather `[rows, K*Cin]` neighbour columns (zeros for missing taps, all-missing
  taps dropped) chunk by chunk into a preallocated buffer and run one GEMM per chunk.
Both keep memory O(N*C) in forward and backward (backward recomputes gathers; no `[N, K, C]` tensor is kept).
bf16/fp16 inputs run their GEMMs in that dtype only where the CPU has native support (AVX512/AMX via oneDNN),
otherwise in float32 with the result cast back (same values up to the final rounding, much faster).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .neighbors import neighbor_map
from .tensor import SparseTensor

CHUNK_ROWS = 2048           # im2col rows per GEMM; pair slices hold at most CHUNK_ROWS * K rows
PAIR_MAX_OCCUPANCY = 0.75   # "pairs" when at most this fraction of the N*K taps is active (measured crossover ~0.8)
STRATEGY = "auto"           # "auto" | "pairs" | "im2col" (tests and benchmarks force one)

_NATIVE_LOW_PRECISION: dict[torch.dtype, bool] = {}


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    """GEMM dtype for inputs of t's dtype: half types only where the CPU has native kernels."""
    dt = t.dtype
    if dt not in (torch.bfloat16, torch.float16) or t.device.type != "cpu":
        return dt
    if dt not in _NATIVE_LOW_PRECISION:
        name = "_is_mkldnn_bf16_supported" if dt == torch.bfloat16 else "_is_mkldnn_fp16_supported"
        try:
            _NATIVE_LOW_PRECISION[dt] = bool(getattr(torch.ops.mkldnn, name)())
        except (AttributeError, RuntimeError):
            _NATIVE_LOW_PRECISION[dt] = False
    return dt if _NATIVE_LOW_PRECISION[dt] else torch.float32


class ConvPlan:
    """How to run a conv over one neighbour map: `kind` "pairs" (with the per-tap pair lists) or "im2col" (with
    the taps that have at least one active neighbour)."""

    __slots__ = ("kind", "out_rows", "in_rows", "counts", "active", "center", "occupancy")

    def __init__(self, nbr: torch.Tensor, strategy: str | None = None):
        n, k = nbr.shape
        strategy = strategy or STRATEGY
        if strategy not in ("auto", "pairs", "im2col"):
            raise ValueError(f"unknown sparse conv strategy {strategy!r}")
        valid = nbr < n
        counts = valid.sum(0)
        self.occupancy = float(counts.sum()) / max(n * k, 1)
        self.center = k // 2
        self.out_rows = self.in_rows = None
        if strategy == "pairs" or (strategy == "auto" and self.occupancy <= PAIR_MAX_OCCUPANCY):
            self.kind = "pairs"
            tap, o = valid.t().nonzero(as_tuple=True)  # grouped by tap, output rows ascending
            self.out_rows, self.in_rows = o, nbr[o, tap]
            self.counts = counts.tolist()
            self.active = None
        else:
            self.kind = "im2col"
            self.counts = counts.tolist()
            act = counts > 0
            self.active = None if bool(act.all()) else act.nonzero().squeeze(1)

    def taps(self):
        """(tap, start, count) of the non-centre taps with active pairs (pairs plan)."""
        start = 0
        for k, c in enumerate(self.counts):
            if c and k != self.center:
                yield k, start, c
            start += c


def _plan_for(x: SparseTensor, nbr: torch.Tensor, kernel: tuple[int, ...], num_frames: int | None) -> ConvPlan:
    """Plan cached next to its neighbour map (same coordinate set, kernel and frame count)."""
    temporal = len(kernel) == 4 and kernel[0] > 1
    ck = ("conv_plan", kernel, int(num_frames) if temporal else None, STRATEGY)
    plan = x.cache.get(ck)
    if plan is None:
        plan = ConvPlan(nbr)
        x.cache[ck] = plan
    return plan


def _im2col_conv(x: torch.Tensor, nbr: torch.Tensor, w2: torch.Tensor, chunk: int) -> torch.Tensor:
    """out[p] = sum_k x[nbr[p,k]] @ w2[k*Cin:(k+1)*Cin]; w2 is [K*Cin, Cout] (only the taps in nbr's columns)."""
    n, k = nbr.shape
    cin = x.shape[1]
    x_pad = torch.cat([x, x.new_zeros(1, cin)], 0)
    out = x.new_empty(n, w2.shape[1])
    rows = max(1, min(chunk, n))
    buf = x.new_empty(rows * k, cin)
    for s in range(0, n, rows):
        nb = nbr[s:s + rows].reshape(-1)
        cols = torch.index_select(x_pad, 0, nb, out=buf[:nb.shape[0]]).view(-1, k * cin)
        torch.mm(cols, w2, out=out[s:s + rows])
    return out


def _im2col_weight_grad(x: torch.Tensor, nbr: torch.Tensor, gy: torch.Tensor, chunk: int) -> torch.Tensor:
    """[Cout, K*Cin] = sum over chunks gy^T @ cols."""
    n, k = nbr.shape
    cin = x.shape[1]
    x_pad = torch.cat([x, x.new_zeros(1, cin)], 0)
    gw2 = x.new_zeros(gy.shape[1], k * cin)
    rows = max(1, min(chunk, n))
    buf = x.new_empty(rows * k, cin)
    for s in range(0, n, rows):
        nb = nbr[s:s + rows].reshape(-1)
        cols = torch.index_select(x_pad, 0, nb, out=buf[:nb.shape[0]]).view(-1, k * cin)
        gw2.addmm_(gy[s:s + rows].t(), cols)
    return gw2


def _pair_accumulate(out: torch.Tensor, src: torch.Tensor, w: torch.Tensor, plan: ConvPlan, slice_rows: int,
                     transpose: bool) -> None:
    """out[dst] += src[from] @ w[k] over every non-centre tap's pairs; transpose=True runs the adjoint
    (dst/from swapped, w[k]^T), i.e. the input gradient."""
    dst_all, src_all = (plan.in_rows, plan.out_rows) if transpose else (plan.out_rows, plan.in_rows)
    for k, start, cnt in plan.taps():
        wk = w[k].t() if transpose else w[k]
        for s in range(start, start + cnt, slice_rows):
            e = min(s + slice_rows, start + cnt)
            out.index_add_(0, dst_all[s:e], torch.mm(src.index_select(0, src_all[s:e]), wk))


class SubmanifoldConvFunction(torch.autograd.Function):
    """y = conv(x) with weight [Cout, K, Cin] over neighbour map nbr [N, K]; `plan` (optional) picks the
    strategy (computed from nbr when omitted). Backward recomputes gathers chunk by chunk."""

    @staticmethod
    def forward(ctx, x, weight, bias, nbr, chunk, plan=None):
        cout, k, cin = weight.shape
        if plan is None:
            plan = ConvPlan(nbr)
        cdt = _compute_dtype(x)
        if cdt in (torch.bfloat16, torch.float16) and plan.kind == "pairs":
            # native half GEMMs: index-adding per-tap products would accumulate in half precision; one
            # K*Cin reduction per output row (im2col) keeps the float32 accumulation of the GEMM
            plan = ConvPlan(nbr, "im2col")
        xc, wc = x.to(cdt), weight.to(cdt)
        bc = bias.to(cdt) if bias is not None else None
        y = _conv_forward(xc, wc, bc, nbr, chunk, plan)
        ctx.save_for_backward(x, weight, nbr)
        ctx.has_bias = bias is not None
        ctx.chunk, ctx.plan, ctx.cdt = chunk, plan, cdt
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, gy):
        x, weight, nbr = ctx.saved_tensors
        plan, cdt, chunk = ctx.plan, ctx.cdt, ctx.chunk
        cout, k, cin = weight.shape
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gx = gw = gb = None
        gyc = gy.to(cdt).contiguous()
        xc, wc = x.to(cdt), weight.to(cdt)
        if plan.kind == "pairs":
            wk = wc.permute(1, 2, 0)  # [K, Cin, Cout]
            slice_rows = max(1, chunk * k)
            if need_x:
                gx = torch.mm(gyc, wk[plan.center].t())
                _pair_accumulate(gx, gyc, wk, plan, slice_rows, transpose=True)
            if need_w:
                gwk = xc.new_zeros(k, cin, cout)
                torch.mm(xc.t(), gyc, out=gwk[plan.center])
                for kk, start, cnt in plan.taps():
                    for s in range(start, start + cnt, slice_rows):
                        e = min(s + slice_rows, start + cnt)
                        gwk[kk].addmm_(xc.index_select(0, plan.in_rows[s:e]).t(),
                                       gyc.index_select(0, plan.out_rows[s:e]))
                gw = gwk.permute(2, 0, 1)
        else:
            if need_x:
                # The neighbour relation is symmetric (offset k <-> K-1-k), so the input gradient is the same
                # convolution of gy with the flipped, transposed kernel: no scatter needed.
                wt = wc.flip(1).permute(1, 0, 2)  # [K, Cout, Cin]
                nb, wt = _active_taps(nbr, wt, plan)  # the active tap set is mirror-symmetric
                gx = _im2col_conv(gyc, nb, wt.reshape(-1, cin), chunk)
            if need_w:
                nb = nbr if plan.active is None else nbr[:, plan.active]
                gw2 = _im2col_weight_grad(xc, nb, gyc, chunk)
                if plan.active is None:
                    gw = gw2.view(cout, k, cin)
                else:
                    gw = xc.new_zeros(cout, k, cin)
                    gw[:, plan.active] = gw2.view(cout, -1, cin)
        if ctx.has_bias and need_b:
            gb = gyc.sum(0)
        gx = gx.to(x.dtype) if gx is not None else None
        gw = gw.to(weight.dtype).contiguous() if gw is not None else None
        gb = gb.to(weight.dtype) if gb is not None else None
        return gx, gw, gb, None, None, None


def _active_taps(nbr: torch.Tensor, w_kio: torch.Tensor, plan: ConvPlan):
    """Drop taps without any active neighbour: (nbr columns, w [K', I, O])."""
    if plan.active is None:
        return nbr, w_kio
    return nbr[:, plan.active], w_kio[plan.active]


def _conv_forward(x, w, b, nbr, chunk, plan: ConvPlan) -> torch.Tensor:
    cout, k, cin = w.shape
    if plan.kind == "pairs":
        wk = w.permute(1, 2, 0)  # [K, Cin, Cout]
        y = torch.addmm(b, x, wk[plan.center]) if b is not None else torch.mm(x, wk[plan.center])
        _pair_accumulate(y, x, wk, plan, max(1, chunk * k), transpose=False)
        return y
    nb, wk = _active_taps(nbr, w.permute(1, 2, 0), plan)  # [K', Cin, Cout]
    y = _im2col_conv(x, nb, wk.reshape(-1, cout), chunk)
    if b is not None:
        y += b
    return y


def submanifold_conv(x: SparseTensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     num_frames: int | None = None) -> SparseTensor:
    """Functional form: weight `[Cout, *kernel, Cin]` (kernel of 3 spatial or 4 (t, x, y, z) sizes)."""
    kernel = tuple(weight.shape[1:-1])
    if x.feats.dim() != 2:
        raise ValueError(f"sparse conv expects feats [N, C], got {tuple(x.feats.shape)}")
    if x.feats.shape[1] != weight.shape[-1]:
        raise ValueError(f"sparse conv expects {weight.shape[-1]} input channels, got {x.feats.shape[1]}")
    nbr = neighbor_map(x, kernel, num_frames)
    w = weight.reshape(weight.shape[0], -1, weight.shape[-1]).to(x.feats.dtype)
    b = bias.to(x.feats.dtype) if bias is not None else None
    feats = x.feats.contiguous()
    if feats.shape[0] == 0:
        return x.replace(feats.new_zeros(0, weight.shape[0]))
    plan = _plan_for(x, nbr, kernel, num_frames)
    y = SubmanifoldConvFunction.apply(feats, w, b, nbr, CHUNK_ROWS, plan)
    return x.replace(y)


class _ConvParams(nn.Module):
    """Holds `weight [Cout, *kernel, Cin]` and `bias [Cout]` (the official `.conv` child)."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, ...], bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cout, *kernel, cin))
        self.bias = nn.Parameter(torch.empty(cout)) if bias else None
        fan_in = cin * math.prod(kernel)
        bound = 1 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)


class SparseConv(nn.Module):
    """Submanifold convolution with a kernel over (x, y, z) (3 sizes) or (t, x, y, z) (4 sizes).

    Keys `conv.weight` / `conv.bias` as in the official checkpoints."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, ...] = (3, 3, 3), bias: bool = True):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel = in_channels, out_channels, tuple(kernel)
        self.conv = _ConvParams(in_channels, out_channels, self.kernel, bias)

    @property
    def temporal(self) -> bool:
        return len(self.kernel) == 4 and self.kernel[0] > 1

    def forward(self, x: SparseTensor, num_frames: int | None = None) -> SparseTensor:
        return submanifold_conv(x, self.conv.weight, self.conv.bias, num_frames if self.temporal else None)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel={self.kernel}"


def SparseConv3d(in_channels: int, out_channels: int, kernel_size: int = 3, **kw) -> SparseConv:
    """Per-frame 3x3x3 submanifold conv (official `SparseConv3d`)."""
    return SparseConv(in_channels, out_channels, (kernel_size,) * 3, **kw)


def SparseConv1d(in_channels: int, out_channels: int, kernel_size: int = 3, **kw) -> SparseConv:
    """Temporal conv across adjacent frames at identical (x, y, z) (official `SparseConv1d`, (3,1,1,1))."""
    return SparseConv(in_channels, out_channels, (kernel_size, 1, 1, 1), **kw)


def SparseConv4d(in_channels: int, out_channels: int, kernel_size: int = 3, **kw) -> SparseConv:
    """Full spatio-temporal 3^4 submanifold conv (official `SparseConv4d`)."""
    return SparseConv(in_channels, out_channels, (kernel_size,) * 4, **kw)
