"""``python -m aos_cli`` runs the same CLI as the ``aos-evidence`` script."""
import sys

from aos_cli.main import main

sys.exit(main())
