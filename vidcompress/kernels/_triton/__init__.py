"""Triton kernels and their launchers; imported lazily (on the first Triton call) by ``vidcompress.kernels``.

Importing these modules decorates the kernels with ``triton.jit``, which reads ``TRITON_INTERPRET`` at that moment.
"""
