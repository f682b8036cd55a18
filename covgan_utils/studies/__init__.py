"""Studies built on the library: equal-compute ablations (`ablation`), the self-contained GPU job (`gpu_job`), and the progression report (`progression`)."""
