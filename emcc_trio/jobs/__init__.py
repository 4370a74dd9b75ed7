"""Compiles and runs that outlive an HTTP request: each job is an append-only event log in
the store (`events`), run by the replica it was submitted to (`manager`) and readable from
any replica that shares the store."""
