from refq.cli import main

raise SystemExit(main())
