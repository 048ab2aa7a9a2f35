from ipvland.cli import main

raise SystemExit(main())
