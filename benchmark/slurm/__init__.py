"""SLURM through submitit: the cluster configuration and job arrays that sweeps and data preparation share."""
