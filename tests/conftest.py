import os

# Tests run on the CPU with small shapes; keep torch from oversubscribing the 2-core machines.
os.environ.setdefault("OMP_NUM_THREADS", "2")
