"""`python -m infra.modelcache ...`: the cache commands without the rest of the infra CLI."""

import gc

# Importing botocore, typer and awscrt allocates objects that live as long as the process; the cyclic
# collector walking them again and again was a quarter of a pull's start-up CPU. main() freezes them.
gc.disable()

from infra.modelcache.cli import main  # noqa: E402

main()
