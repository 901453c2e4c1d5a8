"""Cryptographic recipes of credvault (docs/format.md).

The only layer that touches key material directly. ``_primitives`` is private; the
rest of the package uses the recipes in ``blobs``, ``sealing``, ``keyrecord``,
``signing`` and ``shamir``.
"""
