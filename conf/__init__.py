"""The Hydra configuration of `bench.run`, installed as the package `bench_conf`
so that an installed copy finds its configs wherever it runs from. The YAML
files are package data; `bench.config.conf_dir()` is the one place that
computes where they are."""
