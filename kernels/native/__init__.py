"""Native CPU kernels in C (AVX2 + FMA, OpenMP threads), built with the system compiler on first use."""
