"""numba kernels: arrays and scalars in, arrays out; they never raise for user input.

Each public kernel takes the ledger `State` first and works on a whole batch. Helpers that touch a
single position are small `@njit(inline="always")` functions over primitive arguments.
"""
