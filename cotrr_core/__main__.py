from cotrr_core.cli import main

raise SystemExit(main())
