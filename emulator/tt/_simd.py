"""16-lane float32 vectors for the TT kernels (private to ``emulator.tt.kernels``).

Numba cannot keep an accumulator array in registers (it cannot prove that the
accumulator and the cores do not alias), and LLVM vectorises the short,
unknown-length loops of a TT rebuild (ranks of 16 or 32) badly. These
intrinsics give the kernels a value type, ``<16 x float>``, that lives in
registers across a loop:

* ``vzero()``; ``vbroadcast(x)`` (float32 scalar in every lane)
* ``vload(arr, i, n)``: lanes ``[0, n)`` from ``arr[i:]`` (1-D float32), the rest
  ``0.0`` and not read (masked: a row's end never reads past the array)
* ``vstore(arr, i, v, n)``: lanes ``[0, n)`` to ``arr[i:]``
* ``vfma(a, b, c)``: ``a * b + c`` per lane, one rounding (``llvm.fma``)
* ``vsum4(a, b, c, d)`` / ``vsum16(a0..a15)``: lane ``l`` = the sum of the
  lanes of argument ``l``, all sums by one shuffle tree (for 16 vectors: 30
  shuffles and 15 adds instead of 16 separate reductions)

``n`` must be in ``[0, 16]``; callers guarantee it (no check on the hot path).
(``emulator/_simd.py`` has a similar type for the pooling kernels, without
FMA, broadcasts or reductions.)
"""

from __future__ import annotations

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic, models, register_model

_LANES = 16
_F32 = ir.FloatType()
_VEC = ir.VectorType(_F32, _LANES)
_I32 = ir.IntType(32)
_PTR = ir.PointerType()


class _Vec16Type(types.Type):
    def __init__(self) -> None:
        super().__init__(name="TTVec16")


_Vec16 = _Vec16Type()


@register_model(_Vec16Type)
class _Vec16Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VEC)


def _lane_mask(builder, n):
    """``<16 x i1>`` with lanes ``[0, n)`` set (0 <= n <= 16)."""
    n32 = builder.trunc(n, _I32) if n.type.width > 32 else builder.zext(n, _I32) if n.type.width < 32 else n
    bits = builder.sub(builder.shl(ir.Constant(_I32, 1), n32), ir.Constant(_I32, 1))
    return builder.bitcast(builder.trunc(bits, ir.IntType(_LANES)), ir.VectorType(ir.IntType(1), _LANES))


def _f32_ptr(context, builder, arrty, arr, index):
    ary = context.make_array(arrty)(context, builder, arr)
    return builder.bitcast(builder.gep(ary.data, [index]), _PTR)


def _is_f32_1d(t) -> bool:
    return isinstance(t, types.Array) and t.ndim == 1 and t.dtype == types.float32


def _shuffle(builder, a, b, lanes):
    return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(_I32, len(lanes)), lanes))


@intrinsic
def vzero(typingctx):
    return _Vec16(), lambda context, builder, sig, args: ir.Constant(_VEC, None)


@intrinsic
def vload(typingctx, arr, index, n):
    """Lanes [0, n) from arr[index:]; lanes >= n are 0.0 and not read."""
    if not (_is_f32_1d(arr) and isinstance(index, types.Integer) and isinstance(n, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        mask = _lane_mask(builder, args[2])
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VEC, [_PTR, _I32, mask.type, _VEC]),
                                            "llvm.masked.load.v16f32.p0")
        ptr = _f32_ptr(context, builder, sig.args[0], args[0], args[1])
        return builder.call(fn, [ptr, ir.Constant(_I32, 4), mask, ir.Constant(_VEC, None)])

    return _Vec16(arr, index, n), codegen


@intrinsic
def vstore(typingctx, arr, index, v, n):
    """arr[index + l] = v[l] for lanes l < n."""
    if not (_is_f32_1d(arr) and isinstance(index, types.Integer) and v == _Vec16 and isinstance(n, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        mask = _lane_mask(builder, args[3])
        fnty = ir.FunctionType(ir.VoidType(), [_VEC, _PTR, _I32, mask.type])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.masked.store.v16f32.p0")
        builder.call(fn, [args[2], _f32_ptr(context, builder, sig.args[0], args[0], args[1]), ir.Constant(_I32, 4),
                          mask])
        return context.get_dummy_value()

    return types.void(arr, index, _Vec16, n), codegen


@intrinsic
def vbroadcast(typingctx, x):
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        undef = ir.Constant(_VEC, ir.Undefined)
        one = builder.insert_element(undef, args[0], ir.Constant(_I32, 0))
        return _shuffle(builder, one, undef, [0] * _LANES)

    return _Vec16(x), codegen


@intrinsic
def vfma(typingctx, a, b, c):
    """a * b + c, lane-wise (one rounding)."""
    if not (a == _Vec16 and b == _Vec16 and c == _Vec16):
        return None

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VEC, [_VEC] * 3), "llvm.fma.v16f32")
        return builder.call(fn, list(args))

    return _Vec16(_Vec16, _Vec16, _Vec16), codegen


@intrinsic
def vsum4(typingctx, a, b, c, d):
    """Lanes 0..3 = (sum a, sum b, sum c, sum d): four horizontal sums by one shuffle tree."""
    if not all(x == _Vec16 for x in (a, b, c, d)):
        return None

    def codegen(context, builder, sig, args):
        a, b, c, d = args
        lo, hi = list(range(8)) + list(range(16, 24)), list(range(8, 16)) + list(range(24, 32))
        ab = builder.fadd(_shuffle(builder, a, b, lo), _shuffle(builder, a, b, hi))  # a: 0-7, b: 8-15
        cd = builder.fadd(_shuffle(builder, c, d, lo), _shuffle(builder, c, d, hi))  # c: 0-7, d: 8-15
        v = builder.fadd(_shuffle(builder, ab, cd, [0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27]),
                         _shuffle(builder, ab, cd, [4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31]))
        v = builder.fadd(_shuffle(builder, v, v, [0, 1, 4, 5, 8, 9, 12, 13] * 2),  # a: 0-1, b: 2-3, c: 4-5, d: 6-7
                         _shuffle(builder, v, v, [2, 3, 6, 7, 10, 11, 14, 15] * 2))
        return builder.fadd(_shuffle(builder, v, v, [0, 2, 4, 6] * 4), _shuffle(builder, v, v, [1, 3, 5, 7] * 4))

    return _Vec16(_Vec16, _Vec16, _Vec16, _Vec16), codegen


def _tree_sum_codegen(builder, vectors):
    """Horizontal sums of up to 16 vectors into the lanes of one (lane l = sum of vector l), by a shuffle tree:
    each level pairs vectors and adds the two halves of every lane group (30 shuffles + 15 adds for 16)."""
    size = _LANES
    while len(vectors) > 1:
        half = size // 2
        groups = _LANES // size
        lo = [g * size + i for g in range(groups) for i in range(half)]
        lo = lo + [_LANES + x for x in lo]
        hi = [x + half for x in lo]
        vectors = [builder.fadd(_shuffle(builder, u, v, lo), _shuffle(builder, u, v, hi))
                   for u, v in zip(vectors[0::2], vectors[1::2])]
        size = half
    return vectors[0]


@intrinsic
def vsum16(typingctx, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15):
    """Lane l = the sum of the lanes of argument l."""
    if not all(x == _Vec16 for x in (a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15)):
        return None
    return _Vec16(*([_Vec16] * 16)), lambda context, builder, sig, args: _tree_sum_codegen(builder, list(args))
