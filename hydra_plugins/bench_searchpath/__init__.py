"""Configs from other installed packages: each entry point of group
`discrete_latent_bench.conf` names a Python package whose folder holds config
groups laid out like conf/ (`estimator/<name>.yaml`, `conditioning/<name>.yaml`,
`task/<name>.yaml`). Hydra finds this plugin in its `hydra_plugins` namespace
and appends those packages to the search path, so `python -m bench.run
estimator=<theirs>` composes with no edit to this repository.

    # the user's pyproject.toml
    [project.entry-points."discrete_latent_bench.estimators"]
    my_est = "my_pkg.my_est"             # a module whose Estimator is @register-ed
    [project.entry-points."discrete_latent_bench.conf"]
    my_pkg = "my_pkg.conf"               # my_pkg/conf/estimator/my_est.yaml
"""
from __future__ import annotations

from importlib.metadata import entry_points

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

GROUP = "discrete_latent_bench.conf"


class BenchSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
            search_path.append(provider=f"{GROUP}:{ep.name}", path=f"pkg://{ep.value}")
