"""The names inside a built dataset folder: what builders write, and what loading, cards and publishing read.

A built folder holds `data/<config>/<split>-XXXXX-of-YYYYY.parquet`, a `README.md` dataset card whose YAML lists
the configs, figures under `figures/`, and `build_report.json`. It loads with `datasets.load_dataset(folder, config)`.
"""

DATA_DIR = "data"
FIGURES_DIR = "figures"
REPORT_FILE = "build_report.json"
CARD_FILE = "README.md"
"""The card of a dataset or model folder, as the Hub names it."""
BUILD_MARKER = ".earthvl-build.json"
"""Written last into every build (hidden, so never published): earthvl's name and version, the dataset and every
path the build wrote. A rebuild replaces only a folder whose marker says so and that holds nothing else."""
