"""The load test (`nox -s load`): a real server, a concurrent mix, checks that the caps held."""
