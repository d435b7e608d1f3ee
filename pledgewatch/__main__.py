from pledgewatch.cli import main

raise SystemExit(main())
