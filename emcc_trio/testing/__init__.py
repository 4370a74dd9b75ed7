"""What `tests/`, `load/` and `bench/` share: real servers started as subprocesses, real
Redis servers, the test programs, and the checks for what a job leaves behind. Not used by
the service itself."""
