"""Emscripten ports, offline: the catalog of the ports this service installs (catalog), the
Debian sources they are built from (debsrc), the install that builds them into the service's
emscripten cache (install, which runs emscripten's embuilder through embuild), and what an
install left (installed), which the server reads at start."""
