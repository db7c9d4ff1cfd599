from imgtrans.cli import main

raise SystemExit(main())
