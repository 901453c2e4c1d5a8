"""Storage queries by noun, set-based and streamed (issue 13).

Each module holds the queries of one noun (``secrets``, ``audit``, ``clients``, ``grants``)
as functions that take an open Core ``Connection`` and explicit arguments, and return
plain rows: no decryption, no trust decision, no audit append (those stay with the
callers). A listing reads one query per page, never one per row, and walks a table in
pages by keyset (``WHERE key > :last ORDER BY key LIMIT :page``, ``paging.pages``), so
its memory is bounded by the page, not by the table.
"""
