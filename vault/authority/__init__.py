"""The authority: what runs where the database is (storage, authorisation, the audit append).

It sees ids, lookup tags, ciphertext, public keys and signatures only; no module here
imports a recipe that unwraps, decrypts or unseals (tests/authority/test_imports.py).
"""
