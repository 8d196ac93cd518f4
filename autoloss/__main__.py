from autoloss.cli import main

raise SystemExit(main())
