import gc

gc.disable()  # during the imports below: see reconciler.cli.main

from reconciler.cli import main  # noqa: E402

main()
