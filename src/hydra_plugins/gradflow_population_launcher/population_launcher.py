"""`hydra/launcher=population` under the name Hydra accepts.

Hydra instantiates a launcher only from a class it found in the `hydra_plugins` namespace
package (hydra/core/plugins.py: `is_in_toplevel_plugins_module`), registered under its
module's name; the launcher itself is gradflow.training.population_launcher's.
"""

from gradflow.training import population_launcher


class PopulationLauncher(population_launcher.PopulationLauncher):
    """gradflow.training.population_launcher.PopulationLauncher, as Hydra's plugin."""
