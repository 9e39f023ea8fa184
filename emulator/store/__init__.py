"""The store: raw row files in 4 KiB pages, TT cores in HDF5, and the checksummed manifest.

Modules: :mod:`.layout` (row and page geometry), :mod:`.store` (open, read,
verify), :mod:`.build` (write a store crash-safely), :mod:`.weights` (where
rows come from: synthetic or imported).
"""
