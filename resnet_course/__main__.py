"""``python -m resnet_course ...`` runs the ``resnet-course`` command line."""

import sys

from resnet_course.cli import main

if __name__ == "__main__":
    sys.exit(main())
