"""The keyholder: what runs where the engineer's keys are.

Every decryption and signature of an operation, and the trust checks on everything the
authority returns: nothing from the authority is used before it verifies.
"""
