"""`nox -s bench`: the service's figures against raw emcc."""
