"""Allow ``python -m vxnet``."""

from vxnet.cli import main

raise SystemExit(main())
