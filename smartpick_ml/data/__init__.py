"""Stage 1, the data: the program catalog (real, imported from ``../shared``, or synthetic) and
atomic reading and writing of tables."""
