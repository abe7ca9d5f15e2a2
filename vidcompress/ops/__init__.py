"""Shared building blocks of the methods (similarities, greedy selection, density-peak clustering, segmentation).

Each primitive lives in one module here and is reused by every method that needs it; the GPU kernels of
``vidcompress.kernels`` replace their hot paths.
"""
