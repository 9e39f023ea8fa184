"""A minimal 16-lane float32 vector for Numba kernels (private to the emulator's kernels).

Numba cannot keep an accumulator array in registers (it cannot prove the
table and the accumulator do not alias), so a row pooled into ``out[b]`` costs
a store-to-load round trip per lookup. These intrinsics give kernels a value
type, ``F32x16`` (LLVM ``<16 x float>``), that lives in registers across a
loop, as FBGEMM's generated kernels keep theirs:

* ``vzero()`` -> all lanes ``+0.0``
* ``vadd(a, b)`` -> lane-wise IEEE float32 add (no fast-math: each lane is
  exactly ``np.float32(a) + np.float32(b)``, so sums stay bit-exact)
* ``vload_f32(arr, i, n)`` -> lanes ``[0, n)`` are the float32 values stored at
  element ``i`` of the 1-D array ``arr`` (any dtype: for a uint8 buffer ``i``
  is a byte offset, which need not be aligned); lanes ``>= n`` are ``+0.0`` and
  are not read (a masked load, so a row's end never reads past the buffer)
* ``vload_f16(arr, i, n)`` -> the same for IEEE half values, widened exactly
  (LLVM ``fpext``, F16C ``vcvtph2ps`` on x86)
* ``vload_row(arr, i, n)`` -> ``vload_f32`` if ``arr`` is float32, ``vload_f16``
  if it is uint16 (an fp16 table viewed as its bits), chosen at compile time
* ``vstore_f32(arr, i, v, n)`` -> stores lanes ``[0, n)`` at element ``i``
* ``prefetch(arr, i)`` -> ``prefetcht0`` of element ``i`` (never faults)
* ``vload_f32_at(addr, n)`` / ``prefetch_at(addr)`` -> the same at a byte address (an integer:
  kernels select a row's address among arrays without a branch)

``n`` must be in ``[0, 16]``; callers guarantee it (no check on the hot path).
A constant ``n = 16`` folds the mask away into a plain vector load.
"""

from __future__ import annotations

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic, models, register_model

LANES = 16
_F32 = ir.FloatType()
_VEC = ir.VectorType(_F32, LANES)
_HALF_VEC = ir.VectorType(ir.HalfType(), LANES)
_I32 = ir.IntType(32)
_PTR = ir.PointerType()


class F32x16Type(types.Type):
    def __init__(self) -> None:
        super().__init__(name="F32x16")


F32x16 = F32x16Type()


@register_model(F32x16Type)
class _F32x16Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VEC)


def _element_ptr(context, builder, arrty, arr, index):
    ary = context.make_array(arrty)(context, builder, arr)
    return builder.gep(ary.data, [index])


def _mask(builder, n):
    """``<16 x i1>`` with lanes ``[0, n)`` set: bitcast of ``(1 << n) - 1``."""
    n32 = builder.trunc(n, _I32) if n.type.width > 32 else builder.zext(n, _I32) if n.type.width < 32 else n
    bits = builder.sub(builder.shl(ir.Constant(_I32, 1), n32), ir.Constant(_I32, 1))
    return builder.bitcast(builder.trunc(bits, ir.IntType(LANES)), ir.VectorType(ir.IntType(1), LANES))


def _masked_load(builder, ptr, vec_type, mask):
    fnty = ir.FunctionType(vec_type, [_PTR, _I32, mask.type, vec_type])
    name = f"llvm.masked.load.v{LANES}{'f32' if vec_type is _VEC else 'f16'}.p0"
    fn = cgutils.get_or_insert_function(builder.module, fnty, name)
    return builder.call(fn, [ptr, ir.Constant(_I32, 1), mask, ir.Constant(vec_type, None)])


def _is_index(t) -> bool:
    return isinstance(t, types.Integer)


def _is_1d(t) -> bool:
    return isinstance(t, types.Array) and t.ndim == 1


@intrinsic
def vzero(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(_VEC, None)

    return F32x16(), codegen


@intrinsic
def vadd(typingctx, a, b):
    if a != F32x16 or b != F32x16:
        return None

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])

    return F32x16(F32x16, F32x16), codegen


def _make_load(vec_type):
    def load(typingctx, arr, index, n):
        if not (_is_1d(arr) and _is_index(index) and _is_index(n)):
            return None

        def codegen(context, builder, sig, args):
            ptr = builder.bitcast(_element_ptr(context, builder, sig.args[0], args[0], args[1]), _PTR)
            value = _masked_load(builder, ptr, vec_type, _mask(builder, args[2]))
            return value if vec_type is _VEC else builder.fpext(value, _VEC)

        return F32x16(arr, index, n), codegen

    return load


_load_f32 = _make_load(_VEC)
_load_f16 = _make_load(_HALF_VEC)
vload_f32 = intrinsic(_load_f32)
vload_f16 = intrinsic(_load_f16)


@intrinsic
def vload_row(typingctx, arr, index, n):
    """``vload_f32`` for a float32 table, ``vload_f16`` for an fp16 table viewed as uint16 bits."""
    if not _is_1d(arr):
        return None
    if arr.dtype == types.float32:
        return _load_f32(typingctx, arr, index, n)
    if arr.dtype == types.uint16:
        return _load_f16(typingctx, arr, index, n)
    return None


@intrinsic
def vstore_f32(typingctx, arr, index, v, n):
    if not (_is_1d(arr) and _is_index(index) and v == F32x16 and _is_index(n)):
        return None

    def codegen(context, builder, sig, args):
        ptr = builder.bitcast(_element_ptr(context, builder, sig.args[0], args[0], args[1]), _PTR)
        mask = _mask(builder, args[3])
        fnty = ir.FunctionType(ir.VoidType(), [_VEC, _PTR, _I32, mask.type])
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.store.v{LANES}f32.p0")
        builder.call(fn, [args[2], ptr, ir.Constant(_I32, 1), mask])
        return context.get_dummy_value()

    return types.void(arr, index, F32x16, n), codegen


@intrinsic
def prefetch(typingctx, arr, index):
    if not (_is_1d(arr) and _is_index(index)):
        return None

    def codegen(context, builder, sig, args):
        ptr = builder.bitcast(_element_ptr(context, builder, sig.args[0], args[0], args[1]), _PTR)
        fnty = ir.FunctionType(ir.VoidType(), [_PTR, _I32, _I32, _I32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        # (address, read, locality 3 = keep in all cache levels, data cache)
        builder.call(fn, [ptr, ir.Constant(_I32, 0), ir.Constant(_I32, 3), ir.Constant(_I32, 1)])
        return context.get_dummy_value()

    return types.void(arr, index), codegen



def _address(builder, addr):
    """An integer address as a pointer (the caller keeps the array it points into alive)."""
    return builder.inttoptr(addr, _PTR)


@intrinsic
def vload_f32_at(typingctx, addr, n):
    """``vload_f32`` from a byte address (an integer, e.g. ``arr.ctypes.data + offset``): lanes ``[0, n)``."""
    if not (_is_index(addr) and _is_index(n)):
        return None

    def codegen(context, builder, sig, args):
        return _masked_load(builder, _address(builder, args[0]), _VEC, _mask(builder, args[1]))

    return F32x16(addr, n), codegen


@intrinsic
def prefetch_at(typingctx, addr):
    """``prefetch`` of a byte address (never faults)."""
    if not _is_index(addr):
        return None

    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(ir.VoidType(), [_PTR, _I32, _I32, _I32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [_address(builder, args[0]), ir.Constant(_I32, 0), ir.Constant(_I32, 3),
                          ir.Constant(_I32, 1)])
        return context.get_dummy_value()

    return types.void(addr), codegen
