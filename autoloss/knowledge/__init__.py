"""Memory: a knowledge base of fingerprints and confirmed search results, and the ranking learned from it.

schema (what a record is) -> store (where records live) -> features (fingerprint -> numbers) -> ranking (records
-> score adjustments and warm-start specs for the prior and the search); seeds builds the shipped read-only
records from published tables; cli is `autoloss knowledge`.
"""
