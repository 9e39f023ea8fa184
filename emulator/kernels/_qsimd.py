"""Loads of quantized rows into ``F32x16`` vectors (private to :mod:`emulator.kernels.quant`).

Extends :mod:`emulator.kernels._simd` (same vector type, same masked-load
contract: lanes ``>= n`` are not read) with what dequantizing needs:

* ``load_f32_at(arr, i)`` -> the float32 stored at byte ``i`` of a uint8 array (any alignment)
* ``load_f16_at(arr, i)`` -> the float16 stored at byte ``i``, widened exactly to float32
* ``vload_u8(arr, i, n)`` -> lanes ``[0, n)`` are the bytes ``arr[i:i+n]`` as float32 (exact)
* ``vload_u4(arr, i, n)`` -> lane ``c`` is nibble ``c`` of the bytes from ``i`` on (low nibble of a byte
  first, FBGEMM's packing), as float32; reads ``ceil(n / 2)`` bytes
* ``vaffine(v, s, b)`` -> ``v * s + b`` lane-wise: an IEEE float32 product, then an IEEE float32 sum
  (two roundings, never a fused multiply-add: no fast-math flags are set)
"""

from __future__ import annotations

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from emulator.kernels._simd import F32x16, LANES

_F32 = ir.FloatType()
_VEC = ir.VectorType(_F32, LANES)
_I8 = ir.IntType(8)
_I32 = ir.IntType(32)
_PTR = ir.PointerType()


def _byte_ptr(context, builder, arrty, arr, index):
    ary = context.make_array(arrty)(context, builder, arr)
    return builder.bitcast(builder.gep(ary.data, [index]), _PTR)


def _mask(builder, n, lanes):
    """``<lanes x i1>`` with lanes ``[0, n)`` set."""
    n32 = builder.trunc(n, _I32) if n.type.width > 32 else builder.zext(n, _I32) if n.type.width < 32 else n
    bits = builder.sub(builder.shl(ir.Constant(_I32, 1), n32), ir.Constant(_I32, 1))
    return builder.bitcast(builder.trunc(bits, ir.IntType(lanes)), ir.VectorType(ir.IntType(1), lanes))


def _masked_load_bytes(builder, ptr, n, lanes):
    vt = ir.VectorType(_I8, lanes)
    mask = _mask(builder, n, lanes)
    fnty = ir.FunctionType(vt, [_PTR, _I32, mask.type, vt])
    fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.load.v{lanes}i8.p0")
    return builder.call(fn, [ptr, ir.Constant(_I32, 1), mask, ir.Constant(vt, None)])


def _is_u8(t) -> bool:
    return isinstance(t, types.Array) and t.ndim == 1 and t.dtype == types.uint8


def _is_index(t) -> bool:
    return isinstance(t, types.Integer)


@intrinsic
def load_f32_at(typingctx, arr, index):
    if not (_is_u8(arr) and _is_index(index)):
        return None

    def codegen(context, builder, sig, args):
        ptr = _byte_ptr(context, builder, sig.args[0], args[0], args[1])
        return builder.load(ptr, typ=_F32, align=1)

    return types.float32(arr, index), codegen


@intrinsic
def load_f16_at(typingctx, arr, index):
    if not (_is_u8(arr) and _is_index(index)):
        return None

    def codegen(context, builder, sig, args):
        ptr = _byte_ptr(context, builder, sig.args[0], args[0], args[1])
        return builder.fpext(builder.load(ptr, typ=ir.HalfType(), align=1), _F32)

    return types.float32(arr, index), codegen


@intrinsic
def vload_u8(typingctx, arr, index, n):
    if not (_is_u8(arr) and _is_index(index) and _is_index(n)):
        return None

    def codegen(context, builder, sig, args):
        ptr = _byte_ptr(context, builder, sig.args[0], args[0], args[1])
        return builder.uitofp(_masked_load_bytes(builder, ptr, args[2], LANES), _VEC)

    return F32x16(arr, index, n), codegen


@intrinsic
def vload_u4(typingctx, arr, index, n):
    if not (_is_u8(arr) and _is_index(index) and _is_index(n)):
        return None

    def codegen(context, builder, sig, args):
        ptr = _byte_ptr(context, builder, sig.args[0], args[0], args[1])
        nbytes = builder.lshr(builder.add(args[2], ir.Constant(args[2].type, 1)), ir.Constant(args[2].type, 1))
        half = LANES // 2
        packed = _masked_load_bytes(builder, ptr, nbytes, half)  # <8 x i8>
        pairs = builder.shuffle_vector(packed, packed, ir.Constant(ir.VectorType(_I32, LANES),
                                                                   [c // 2 for c in range(LANES)]))
        wide = builder.zext(pairs, ir.VectorType(_I32, LANES))  # 32-bit lanes: x86 has variable 32-bit shifts
        shifts = ir.Constant(ir.VectorType(_I32, LANES), [4 * (c % 2) for c in range(LANES)])
        nibbles = builder.and_(builder.lshr(wide, shifts), ir.Constant(ir.VectorType(_I32, LANES), [15] * LANES))
        return builder.sitofp(nibbles, _VEC)  # 0..15: signed conversion is exact and has one instruction

    return F32x16(arr, index, n), codegen


@intrinsic
def vaffine(typingctx, v, s, b):
    if v != F32x16 or s != types.float32 or b != types.float32:
        return None

    def codegen(context, builder, sig, args):
        def splat(x):
            one = builder.insert_element(ir.Constant(_VEC, None), x, ir.Constant(_I32, 0))
            return builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES))

        return builder.fadd(builder.fmul(args[0], splat(args[1])), splat(args[2]))

    return F32x16(F32x16, types.float32, types.float32), codegen
