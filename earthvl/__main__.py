from earthvl.cli import main

raise SystemExit(main())
