"""`prefetch(array, index)`: a software prefetch of one row of an array, for the batch kernels.

Random reads over a 10M-position ledger are DRAM-latency bound (~145 ns per dependent miss on the
reference machine). The batch kernels hide part of that by asking for the hash-table slot and the
quantity row of a lookup a few iterations ahead, so the misses of neighbouring lookups overlap.
A prefetch never faults, so the index needs no bounds check.
"""

from __future__ import annotations

from llvmlite import ir
from numba.core import cgutils, config, types
from numba.core.extending import intrinsic

__all__ = ["prefetch"]


@intrinsic
def prefetch(typingctx, array, index):
    """Prefetch the row `array[index]` (read, high temporal locality) into the cache."""
    if not isinstance(array, types.Array) or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        array_type, index_type = signature.args
        ary = context.make_array(array_type)(context, builder, args[0])
        i = context.cast(builder, args[1], index_type, types.intp)
        stride = cgutils.unpack_tuple(builder, ary.strides, array_type.ndim)[0]
        base = builder.ptrtoint(ary.data, cgutils.intp_t)
        addr = builder.add(base, builder.mul(i, stride))
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        # (address, rw = read, locality = 3 (keep in all levels), cache type = data)
        builder.call(fn, [builder.inttoptr(addr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(array, index), codegen


if config.DISABLE_JIT:  # type: ignore[attr-defined]  # (set at runtime; see [tool.mypy])
    # Kernels run as plain Python (coverage runs): an intrinsic cannot be called from Python.

    def prefetch(array, index):  # type: ignore[no-redef]  # noqa: F811
        """No-op without the JIT."""
