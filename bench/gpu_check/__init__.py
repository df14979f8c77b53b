"""The GPU check: one command that proves and measures alexnet_triton in one lent GPU window.

    python3 -m bench.gpu_check OUTDIR            # on the GPU machine, from the repo's root
    python3 -m bench.gpu_check OUTDIR --dry-run  # anywhere: the plumbing, GPU parts skipped

Nothing is installed and nothing is fetched: the image's python3 imports this checkout
(bootstrap.py). Seven phases run in order, each in its own process under a time box
(orchestrate.PHASES), each writing its record into OUTDIR/gpu-check.json as it ends:

1. environment   GPU, driver, versions, clocks; the bf16 matmul and copy ceilings
2. precompile    every kernel the later phases launch, compiled in parallel on all cores
3. correctness   every kernel forward and backward against its float64 reference at
                 batch 128, in float32, tf32 and bf16, outputs poisoned first
4. model         AlexNet against ReferenceAlexNet (both placements, fp32 and bf16
                 autocast) and torch.compile(fullgraph=True) of it on the GPU
5. training      `python -m alexnet_triton.train` for a few epochs: the loss must fall
6. sanitize      compute-sanitizer memcheck and racecheck over every kernel at batch 2
7. speed         bench/'s training-step and per-op benchmarks, most important first

OUTDIR receives gpu-check.json, gpu-check.log, summary.md (also printed last),
autotune.json (the chosen tiles; give it to a later window with --autotune-cache),
bench.json and bench.md (the benchmarks) and train-metrics.csv.
"""
